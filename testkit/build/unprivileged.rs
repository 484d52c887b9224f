// Included by the build scripts of crates with root-only tests (a build script cannot depend on
// testkit itself).

/// Tests that need root carry `#[cfg_attr(unprivileged, ignore = "needs root: ...")]`: built by
/// a user other than root they are reported as ignored with their reason instead of failing (see
/// `testkit::need`).
fn declare_unprivileged() {
    println!("cargo::rustc-check-cfg=cfg(unprivileged)");
    println!("cargo::rerun-if-env-changed=USER");
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2));
    if euid != Some("0") {
        println!("cargo::rustc-cfg=unprivileged");
    }
}
