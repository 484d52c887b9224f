//! The `list` text format (not yet).
