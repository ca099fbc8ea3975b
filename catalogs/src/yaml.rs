//! TODO(helper B)
