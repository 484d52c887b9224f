//! `sqlx::migrate!` embeds `migrations/` when the crate compiles: rebuild it when they change,
//! or a new migration would be missing from a binary built incrementally.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
