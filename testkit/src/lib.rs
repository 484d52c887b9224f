//! What tests and the local demo share.
//!
//! - [`pg`]: a throwaway PostgreSQL cluster (or the one `DATABASE_URL` names), one fresh
//!   database per caller.
//! - [`crd`]: a strict validator for Kubernetes `openAPIV3Schema`s, used to check the
//!   ClientIntents we emit against the published CRD in `../shared/reference/`.

pub mod crd;
pub mod pg;
