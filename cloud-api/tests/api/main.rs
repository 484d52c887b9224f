//! The cloud API against a real PostgreSQL: one database per test, one test binary.

mod common;

mod auth;
mod hostile;
mod ingest;
mod ingest_limits;
mod paged_reads;
mod protocols;
mod reads;
mod roles;
mod scaled_reads;
mod summary_cache;
mod tenancy;
mod tokens;
