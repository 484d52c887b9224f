//! `scripts/images.sh`: the product's images, built without Docker. Each archive is unpacked
//! and checked against the charts (the image's name:tag) and its Dockerfile (entrypoint, user,
//! command, working directory); its layer becomes a root filesystem in which the binary runs as
//! the image's user through `chroot`, which proves the image holds every library it loads, and
//! which holds nothing but the binary, those libraries and the loader, /etc/passwd, /etc/group
//! and /tmp (and what the Dockerfile says the binary reads at run time). Building twice gives the
//! same image id, and the second build is skipped. Needs root (chroot).
//!
//! The tests build from the debug binaries (`--profile debug`), which the test run has already
//! built, so the script's `cargo build` is a no-op; people get release builds by default.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;
use testkit::process::TempDir;

/// The images the script builds: what the charts run, and the CLI.
const IMAGES: [&str; 4] = ["cluster-agent", "cloud-api", "aws-proxy", "intentmap"];

/// Files an image carries besides its binary, libraries, /etc/passwd and /etc/group, as its
/// Dockerfile's comments say the binary reads them.
fn extra_files(image: &str) -> &'static [&'static str] {
    match image {
        // The webhook appends the system roots to the proxy's CA (--system-roots).
        "aws-proxy" => &["/etc/ssl/certs/ca-certificates.crt"],
        _ => &[],
    }
}

/// The tests write a few hundred megabytes each: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    testkit::need::workspace_root()
}

/// Runs `scripts/images.sh --profile debug --out OUT ARGS...`, or fails with its output.
fn images_sh(out: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("bash");
    cmd.arg(root().join("scripts/images.sh"))
        .args(["--profile", "debug", "--out"])
        .arg(out)
        .args(args)
        .current_dir(root());
    let output = run(&mut cmd);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn yaml(relative: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(&root().join(relative)))
        .unwrap_or_else(|e| panic!("{relative} is not YAML: {e}"))
}

/// `<repository>:<tag>` as the chart's image helper makes it from the default values (the tag
/// defaults to the chart's appVersion). No chart runs the CLI: it is named beside the cluster
/// agent's image, with its tag.
fn chart_image(image: &str) -> String {
    let (chart, component) = match image {
        "cloud-api" => ("cloud-api", None),
        "aws-proxy" => ("cluster-agent", Some("aws")),
        _ => ("cluster-agent", Some("mapper")),
    };
    let values = yaml(&format!("charts/{chart}/values.yaml"));
    let values = component.map_or(&values, |c| &values[c]);
    let app_version = yaml(&format!("charts/{chart}/Chart.yaml"))["appVersion"]
        .as_str()
        .unwrap_or_else(|| panic!("charts/{chart}/Chart.yaml has no appVersion"))
        .to_owned();
    let repository = values["image"]["repository"].as_str().unwrap_or_else(|| {
        panic!("charts/{chart}/values.yaml has no image.repository for {image}")
    });
    let tag = values["image"]["tag"].as_str().filter(|t| !t.is_empty()).unwrap_or(&app_version);
    if image == "cluster-agent" {
        let node = yaml("charts/cluster-agent/values.yaml")["node"]["image"]["repository"].clone();
        assert_eq!(
            node.as_str(),
            Some(repository),
            "the cluster-agent chart's node and mapper run one image"
        );
    }
    if image == "intentmap" {
        let registry = repository.rsplit_once('/').map_or("", |(registry, _)| registry);
        return format!("{registry}/intentmap:{tag}");
    }
    format!("{repository}:{tag}")
}

/// What the final stage of `images/<image>.Dockerfile` says.
#[derive(Debug, Default)]
struct FinalStage {
    user: Option<String>,
    entrypoint: Option<Value>,
    cmd: Option<Value>,
    workdir: Option<String>,
    exposed: Vec<String>,
}

fn final_stage(image: &str) -> FinalStage {
    let path = root().join(format!("images/{image}.Dockerfile"));
    let text = read(&path);
    let stage = text.rsplit("\nFROM ").next().unwrap_or_default();
    let mut final_stage = FinalStage::default();
    for line in stage.lines() {
        let Some((instruction, rest)) = line.split_once(' ') else { continue };
        let exec_form = || {
            serde_json::from_str::<Value>(rest).unwrap_or_else(|e| {
                panic!("{}: `{line}` is not in the exec (JSON) form: {e}", path.display())
            })
        };
        match instruction {
            "USER" => final_stage.user = Some(rest.to_owned()),
            "ENTRYPOINT" => final_stage.entrypoint = Some(exec_form()),
            "CMD" => final_stage.cmd = Some(exec_form()),
            "WORKDIR" => final_stage.workdir = Some(rest.to_owned()),
            "EXPOSE" => final_stage.exposed.extend(rest.split_whitespace().map(|port| {
                if port.contains('/') {
                    port.to_owned()
                } else {
                    format!("{port}/tcp")
                }
            })),
            _ => {}
        }
    }
    final_stage
}

/// The libraries (and the loader) `ldd` says `binary` loads, as absolute paths.
fn libraries(binary: &Path) -> BTreeSet<String> {
    let out = run(Command::new("ldd").arg(binary));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = line.split_once("=> ").map_or(line, |(_, path)| path);
            path.starts_with('/').then(|| path.split(" (").next().unwrap_or(path).to_owned())
        })
        .collect()
}

/// Every path under `dir` (as `/relative`), split into files (anything not a directory) and
/// directories.
fn walk(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut files, mut dirs) = (BTreeSet::new(), BTreeSet::new());
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        let entries =
            std::fs::read_dir(&next).unwrap_or_else(|e| panic!("listing {}: {e}", next.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", next.display()));
            let path = entry.path();
            let relative = format!("/{}", path.strip_prefix(dir).unwrap().display());
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.insert(relative);
                stack.push(path);
            } else {
                files.insert(relative);
            }
        }
    }
    (files, dirs)
}

fn unpack(archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    run(Command::new("tar").arg("-xf").arg(archive).arg("-C").arg(into));
}

/// The image id (`sha256:` and the config's digest) `manifest.json` names in an archive.
fn image_id(archive: &Path) -> String {
    let out = run(Command::new("tar").arg("-xOf").arg(archive).arg("manifest.json"));
    let manifest: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{}'s manifest.json is not JSON: {e}", archive.display()));
    let config = manifest[0]["Config"].as_str().unwrap_or_else(|| {
        panic!("{}'s manifest.json names no Config: {manifest}", archive.display())
    });
    format!("sha256:{}", config.trim_end_matches(".json"))
}

fn sha256(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

/// Checks one unpacked archive against the chart and the Dockerfile, then runs its binary.
fn check_image(image: &str, archive: &Path, scratch: &Path) {
    let unpacked = scratch.join("archive");
    unpack(archive, &unpacked);

    let manifest = json(&unpacked.join("manifest.json"));
    let entries = manifest.as_array().filter(|m| m.len() == 1).unwrap_or_else(|| {
        panic!("{image}: manifest.json should list exactly one image: {manifest}")
    });
    let entry = &entries[0];
    let expected_name = chart_image(image);
    assert_eq!(
        entry["RepoTags"],
        serde_json::json!([expected_name]),
        "{image}: the archive's name:tag is not what the chart's default values make"
    );
    let config_file = entry["Config"].as_str().expect("manifest.json names the config");
    assert_eq!(
        format!("{}.json", sha256(&unpacked.join(config_file))),
        config_file,
        "{image}: the config's file name is not its digest (the image id)"
    );
    let layers = entry["Layers"]
        .as_array()
        .filter(|l| l.len() == 1)
        .unwrap_or_else(|| panic!("{image}: the image should have exactly one layer: {entry}"));
    let layer = unpacked.join(layers[0].as_str().expect("a layer is a path"));

    let config = json(&unpacked.join(config_file));
    let dockerfile = final_stage(image);
    let settings = &config["config"];
    let binary_path = format!("/usr/local/bin/{image}");
    assert_eq!(
        dockerfile.entrypoint,
        Some(serde_json::json!([binary_path])),
        "images/{image}.Dockerfile's ENTRYPOINT is not where the image puts the binary"
    );
    assert_eq!(
        Some(&settings["Entrypoint"]),
        dockerfile.entrypoint.as_ref(),
        "{image}: Entrypoint differs from the Dockerfile's"
    );
    assert_eq!(
        settings["User"].as_str(),
        Some("65532:65532"),
        "{image}: the image's user should be nonroot (65532), as the Dockerfile and chart say"
    );
    assert_eq!(
        settings["User"].as_str(),
        dockerfile.user.as_deref(),
        "{image}: User differs from the Dockerfile's"
    );
    assert_eq!(
        settings.get("Cmd"),
        dockerfile.cmd.as_ref(),
        "{image}: Cmd differs from the Dockerfile's"
    );
    assert_eq!(
        settings["WorkingDir"].as_str(),
        Some(dockerfile.workdir.as_deref().unwrap_or("/")),
        "{image}: WorkingDir differs from the Dockerfile's"
    );
    let exposed: Vec<String> = settings["ExposedPorts"]
        .as_object()
        .map(|ports| ports.keys().cloned().collect())
        .unwrap_or_default();
    assert_eq!(exposed, dockerfile.exposed, "{image}: ExposedPorts differ from the Dockerfile's");
    // The chart's pods run the image as its user (the node agent's as root, which the image
    // therefore names too).
    let (template, uids): (&str, &[&str]) = match image {
        "cloud-api" => ("charts/cloud-api/templates/deployment.yaml", &["65532"]),
        "aws-proxy" => ("charts/cluster-agent/templates/aws-proxy.yaml", &["65532"]),
        "cluster-agent" => ("charts/cluster-agent/templates/mapper.yaml", &["65532"]),
        _ => ("", &[]),
    };
    if !template.is_empty() {
        for uid in uids {
            assert!(
                read(&root().join(template)).contains(&format!("runAsUser: {uid}")),
                "{image}: {template} does not run the image as its user {uid}"
            );
        }
    }

    let rootfs = scratch.join("rootfs");
    unpack(&layer, &rootfs);
    let binary = rootfs.join(binary_path.trim_start_matches('/'));
    let libraries = libraries(&binary);
    assert!(
        libraries.iter().any(|l| l.contains("libc.so"))
            && libraries.iter().any(|l| l.contains("ld-")),
        "{image}: ldd found no libc or loader for the binary: {libraries:?}"
    );
    let mut expected: BTreeSet<String> = libraries.clone();
    expected
        .extend([binary_path.as_str(), "/etc/passwd", "/etc/group"].into_iter().map(str::to_owned));
    expected.extend(extra_files(image).iter().map(|f| f.to_string()));
    let (files, dirs) = walk(&rootfs);
    assert_eq!(
        files, expected,
        "{image}: the image should hold exactly the binary, the libraries ldd names (and the loader), /etc/passwd, /etc/group and its extra files"
    );
    for file in &files {
        let metadata =
            std::fs::symlink_metadata(rootfs.join(file.trim_start_matches('/'))).unwrap();
        assert!(metadata.is_file(), "{image}: {file} should be a regular file (symlinks followed)");
    }
    let workdir = dockerfile.workdir.clone().unwrap_or_default();
    for dir in &dirs {
        assert!(
            dir == "/tmp"
                || *dir == workdir
                || files.iter().any(|f| f.starts_with(&format!("{dir}/"))),
            "{image}: the directory {dir} holds none of the image's files"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let tmp_mode = std::fs::metadata(rootfs.join("tmp"))
        .unwrap_or_else(|e| panic!("{image}: the image has no /tmp: {e}"))
        .permissions()
        .mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777, "{image}: /tmp should be 1777");

    let passwd = read(&rootfs.join("etc/passwd"));
    let group = read(&rootfs.join("etc/group"));
    assert!(
        passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:"))
            && group.lines().any(|l| l.starts_with("nonroot:x:65532:")),
        "{image}: /etc/passwd and /etc/group should name nonroot (65532):\n{passwd}\n{group}"
    );
    // The node agent's pod runs the cluster agent as root.
    let root_expected = image == "cluster-agent";
    assert_eq!(
        passwd.lines().any(|l| l.starts_with("root:x:0:0:")),
        root_expected,
        "{image}: /etc/passwd should name root only where the chart runs the image as uid 0:\n{passwd}"
    );

    // The binary runs inside the image as the image's user: every library it loads is there.
    let env: Vec<(String, String)> = settings["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let mut users = vec!["65532:65532"];
    if root_expected {
        users.push("0:0");
    }
    for user in users {
        let mut cmd = Command::new(testkit::need::command("chroot", "coreutils"));
        cmd.env_clear()
            .envs(env.iter().cloned())
            .arg(format!("--userspec={user}"))
            .arg(&rootfs)
            .args([binary_path.as_str(), "--version"]);
        let out = run(&mut cmd);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{image} {}\n", env!("CARGO_PKG_VERSION")),
            "{image}: `{binary_path} --version` inside the image as {user} printed something else"
        );
    }
}

#[test]
#[cfg_attr(unprivileged, ignore = "needs root: chroot into the images' root filesystems")]
fn images_hold_the_binary_and_exactly_its_libraries_and_run_it_as_the_charts_say() {
    testkit::need::root("chroot into the images' root filesystems");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = TempDir::new("images-out");
    let log = images_sh(out.path(), &[]);
    for image in IMAGES {
        let archive = out.path().join(format!("{image}.tar"));
        assert!(archive.is_file(), "scripts/images.sh wrote no {}:\n{log}", archive.display());
        let scratch = TempDir::new(&format!("images-{image}"));
        check_image(image, &archive, scratch.path());
    }
}

#[test]
#[cfg_attr(unprivileged, ignore = "needs root: the images' files are owned by root")]
fn building_twice_gives_the_same_image_and_skips_the_second_build() {
    testkit::need::root("the images' files are owned by root");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = TempDir::new("images-twice");
    let archive = |image: &str| out.path().join(format!("{image}.tar"));

    let first = images_sh(out.path(), &[]);
    let ids: Vec<String> = IMAGES.iter().map(|i| image_id(&archive(i))).collect();
    let digests: Vec<String> = IMAGES.iter().map(|i| sha256(&archive(i))).collect();
    for image in IMAGES {
        assert!(first.contains(&format!("] {image}: built ")), "{image} was not built:\n{first}");
    }

    let second = images_sh(out.path(), &[]);
    for (image, id) in IMAGES.iter().zip(&ids) {
        assert!(
            second.contains(&format!("] {image}: up to date"))
                && !second.contains(&format!("] {image}: packing")),
            "the second run rebuilt {image} although nothing changed:\n{second}"
        );
        assert_eq!(&image_id(&archive(image)), id, "{image}: the skipped build changed the image");
    }

    // Rebuilt from the same binary and libraries: the same image id, the same bytes.
    let forced = images_sh(out.path(), &["--force"]);
    for ((image, id), digest) in IMAGES.iter().zip(&ids).zip(&digests) {
        assert!(
            forced.contains(&format!("] {image}: built ")),
            "--force did not rebuild {image}:\n{forced}"
        );
        assert_eq!(
            &image_id(&archive(image)),
            id,
            "{image}: the same inputs gave another image id"
        );
        assert_eq!(
            &sha256(&archive(image)),
            digest,
            "{image}: the same inputs gave another archive"
        );
    }
}
