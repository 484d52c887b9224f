//! Declares the `unprivileged` cfg of the root-only tests (the real cluster).

fn main() {
    declare_unprivileged();
}

include!("build/unprivileged.rs");
