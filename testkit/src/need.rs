//! Can this test run here? The one place tests ask.
//!
//! On the project's machines (root, after `scripts/setup.sh`, with `../shared` beside the
//! checkout) every test runs: each helper here returns what the test needs or panics with what
//! is missing and what provides it, so a missing prerequisite is a failure that names it, never
//! a test that prints "skipped" and passes.
//!
//! Tests that need root are also marked `#[cfg_attr(unprivileged, ignore = "needs root: ...")]`:
//! the crates that hold them set the `unprivileged` cfg from their build script when they are
//! built by a user other than root (a build script cannot use this crate; see
//! `cluster-agent/build.rs`), so on a laptop `cargo test` reports them as ignored with the
//! reason, and `scripts/test.sh` lists them. Inside, the test still calls [`root`].

use std::path::{Path, PathBuf};

/// Whether this process runs as root (network namespaces, eBPF, mounts need it).
pub fn is_root() -> bool {
    effective_uid() == Some(0)
}

/// The effective uid from /proc/self/status (`Uid: real effective saved fs`).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    uid_from_status(&status)
}

fn uid_from_status(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Panics unless this process is root, saying what for.
pub fn root(what_for: &str) {
    assert!(
        is_root(),
        "this test needs root ({what_for}); run it as root as CI does (sudo ./scripts/test.sh). Built as a user other than root, it is ignored with this reason"
    );
}

/// The path of `program` on PATH (or in /usr/sbin, /sbin), or a panic naming the Debian package
/// that provides it.
pub fn command(program: &str, debian_package: &str) -> PathBuf {
    find_command(program)
        .unwrap_or_else(|| panic!("this test needs `{program}`, which is not installed: scripts/setup.sh installs it (apt-get install {debian_package})"))
}

/// Where `program` is, if anywhere on PATH or in the system binary folders.
pub fn find_command(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A file installed under the workspace's `target/` by a set-up script (e.g. the Python tools
/// in `target/pytools`), or a panic naming the script.
pub fn target_file(relative: &str, script: &str) -> PathBuf {
    let path = workspace_root().join("target").join(relative);
    assert!(
        path.exists(),
        "this test needs {}, which is missing: run {script} (scripts/setup.sh runs it)",
        path.display()
    );
    path
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    // testkit lives at <root>/testkit.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit is inside the workspace")
        .to_owned()
}

/// A file of the project's shared folder, which sits beside the checkout (`../shared`), given
/// relative to that folder (e.g. `reference/clientintents-crd.yaml`), or a panic saying where it
/// was looked for.
pub fn shared_file(relative: &str) -> PathBuf {
    find_shared_file(relative).unwrap_or_else(|| {
        panic!(
            "this test needs shared/{relative}: put the project's shared folder beside the checkout (looked in every parent folder of {})",
            workspace_root().display()
        )
    })
}

/// `shared/<relative>` in the nearest parent folder of the workspace (or the current directory)
/// that has it.
pub fn find_shared_file(relative: &str) -> Option<PathBuf> {
    let starts = [Some(workspace_root()), std::env::current_dir().ok()];
    starts
        .iter()
        .flatten()
        .flat_map(|start| start.ancestors())
        .map(|dir| dir.join("shared").join(relative))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_uid() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(uid_from_status(status), Some(0));
        assert_eq!(uid_from_status("Name:\tcat\n"), None);
        assert!(effective_uid().is_some(), "/proc/self/status has a Uid line on Linux");
    }

    #[test]
    fn finds_commands_and_names_missing_ones() {
        assert!(find_command("sh").is_some());
        assert_eq!(find_command("no-such-program-intentmap"), None);
        let panic =
            std::panic::catch_unwind(|| command("no-such-program-intentmap", "intentmap-tools"))
                .unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("apt-get install intentmap-tools"), "{message}");
    }

    #[test]
    fn a_missing_shared_file_is_a_failure_that_says_where_to_put_it() {
        let panic = std::panic::catch_unwind(|| shared_file("no/such/file.yaml")).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(
            message.contains("shared/no/such/file.yaml") && message.contains("beside the checkout"),
            "{message}"
        );
    }
}
