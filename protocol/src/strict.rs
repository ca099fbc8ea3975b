//! TODO(helper A)
