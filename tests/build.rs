//! Declares the `unprivileged` cfg of the root-only end-to-end tests.

fn main() {
    declare_unprivileged();
}

include!("../testkit/build/unprivileged.rs");
