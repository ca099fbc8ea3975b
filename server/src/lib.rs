//! steward-server (skeleton)
