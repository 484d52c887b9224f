//! Builds the node agent's kernel programs (`ebpf/src/*.bpf.c`, C with CO-RE) into `OUT_DIR`,
//! where `node::ebpf` embeds them with `include_bytes!`.
//!
//! Needs clang and bpftool (vmlinux.h is generated from the build machine's kernel BTF); the
//! objects are relocated by aya against the BTF of whatever kernel they are loaded on.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const PROGRAMS: &[&str] = &["tcp", "dns"];
const SETUP_HINT: &str = "clang and bpftool are needed to build the eBPF programs: run scripts/setup.sh (apt-get install clang llvm libbpf-dev bpftool)";
const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

fn main() {
    declare_unprivileged();
    if let Err(error) = build() {
        // Just the message (with its causes): a backtrace of the build script helps nobody.
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn build() -> Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir =
        manifest_dir.parent().context("cluster-agent has a parent directory")?.join("ebpf");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed={}", ebpf_dir.join("src").display());
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("include").display());
    for var in ["CLANG", "BPFTOOL", "LLVM_STRIP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let clang = find_tool(
        "CLANG",
        &["clang", "clang-14", "clang-15", "clang-16", "clang-17", "clang-18", "clang-19"],
    );
    let bpftool = find_tool("BPFTOOL", &["bpftool"]);
    let (Some(clang), Some(bpftool)) = (clang, bpftool) else {
        bail!("{SETUP_HINT}");
    };
    if !Path::new(KERNEL_BTF).exists() {
        bail!("{KERNEL_BTF} is missing: the eBPF programs are built against the kernel's BTF, so build on a Linux kernel with CONFIG_DEBUG_INFO_BTF=y");
    }

    generate_vmlinux_h(&bpftool, &out_dir.join("vmlinux.h"))?;

    let arch = match env::var("CARGO_CFG_TARGET_ARCH")?.as_str() {
        "x86_64" => "x86",
        "aarch64" => "arm64",
        other => bail!("no eBPF target architecture is known for {other}"),
    };
    let strip = find_tool(
        "LLVM_STRIP",
        &[
            "llvm-strip",
            "llvm-strip-14",
            "llvm-strip-15",
            "llvm-strip-16",
            "llvm-strip-17",
            "llvm-strip-18",
            "llvm-strip-19",
        ],
    );
    for program in PROGRAMS {
        let source = ebpf_dir.join("src").join(format!("{program}.bpf.c"));
        let object = out_dir.join(format!("{program}.bpf.o"));
        compile(&clang, arch, &source, &object, &ebpf_dir.join("include"), &out_dir)?;
        if let Some(strip) = &strip {
            // DWARF is most of the object and aya does not need it (BTF stays).
            run(Command::new(strip).arg("--strip-debug").arg(&object), "llvm-strip")?;
        }
    }
    Ok(())
}

/// `$VAR` if set, otherwise the first of `names`; found on PATH or in the sbin directories
/// (where Debian puts bpftool, and which a non-root PATH leaves out).
fn find_tool(var: &str, names: &[&str]) -> Option<PathBuf> {
    let candidates: Vec<String> = match env::var(var) {
        Ok(value) => vec![value],
        Err(_) => names.iter().map(|name| name.to_string()).collect(),
    };
    let path = env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .collect();
    candidates.iter().find_map(|candidate| {
        if candidate.contains('/') {
            Some(PathBuf::from(candidate)).filter(|path| path.is_file())
        } else {
            dirs.iter().map(|dir| dir.join(candidate)).find(|path| path.is_file())
        }
    })
}

fn generate_vmlinux_h(bpftool: &Path, header: &Path) -> Result<()> {
    let output = Command::new(bpftool)
        .args(["btf", "dump", "file", KERNEL_BTF, "format", "c"])
        .output()
        .with_context(|| format!("running {}", bpftool.display()))?;
    if !output.status.success() {
        bail!(
            "{} btf dump failed ({}): {}",
            bpftool.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Only rewrite when it changed, so the file's timestamp does not trigger needless rebuilds.
    if std::fs::read(header).ok().as_deref() != Some(output.stdout.as_slice()) {
        std::fs::write(header, &output.stdout)
            .with_context(|| format!("writing {}", header.display()))?;
    }
    Ok(())
}

fn compile(
    clang: &Path,
    arch: &str,
    source: &Path,
    object: &Path,
    include: &Path,
    out_dir: &Path,
) -> Result<()> {
    let mut command = Command::new(clang);
    command
        .args(["-O2", "-g", "-target", "bpf", "-Wall"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg("-I")
        .arg(include)
        .arg("-I")
        .arg(out_dir)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object);
    let output = command.output().with_context(|| format!("running {}", clang.display()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("bpf/bpf_helpers.h") {
            format!("\n{SETUP_HINT}")
        } else {
            String::new()
        };
        bail!("compiling {} failed ({}):\n{stderr}{hint}", source.display(), output.status);
    }
    Ok(())
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let output = command.output().with_context(|| format!("running {what}"))?;
    if !output.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

// Declares the `unprivileged` cfg of root-only tests.
include!("../testkit/build/unprivileged.rs");
