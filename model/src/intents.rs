//! ClientIntents rendering (not yet).
