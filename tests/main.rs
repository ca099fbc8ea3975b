//! End-to-end tests (skeleton)
