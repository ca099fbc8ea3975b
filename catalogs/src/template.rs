//! TODO(helper C)
