//! The cloud API against a real PostgreSQL: one database per test, one test binary.

mod common;

mod auth;
mod ingest;
mod protocols;
mod reads;
mod tenancy;
