//! steward-agent (skeleton)
