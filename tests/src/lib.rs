//! Running the workspace's real binaries from end-to-end tests.

pub mod cloud;
pub mod kube;

pub use cloud::{
    cluster_jwt, fresh_db, get_json, get_text, org_with_cluster, post_gzip, post_report,
    request_cluster_token, Org,
};

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A workspace binary, from the same target directory as the running test. `cargo test
/// --workspace` builds them all before any test runs.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows where it is");
    let dir =
        exe.parent().and_then(|deps| deps.parent()).expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo build --workspace` (or the README's test command) first",
        path.display()
    );
    path
}

/// Runs a binary to completion, panicking with its output if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub use testkit::process::{free_port, spawn, Running};

/// Polls `url` until it answers 2xx, or panics after `timeout`.
pub async fn wait_ready(url: &str, timeout: Duration) {
    testkit::process::wait_ready(&reqwest::Client::new(), url, timeout)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// A kubeconfig in `dir` for an API server at `server` without authentication (the stand-in).
pub fn write_kubeconfig(dir: &std::path::Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {server}\ncontexts:\n- name: stand-in\n  context:\n    cluster: stand-in\n    user: nobody\n    namespace: default\nusers:\n- name: nobody\n  user: {{}}\ncurrent-context: stand-in\n"
    );
    std::fs::write(&path, yaml).expect("writing the test kubeconfig");
    path
}

/// `cloud-api admin <args> --output json` against `database_url`: what it printed.
pub fn admin(database_url: &str, args: &[&str]) -> serde_json::Value {
    let out = run_ok(Command::new(binary("cloud-api")).arg("admin").args(args).args([
        "--output",
        "json",
        "--database-url",
        database_url,
    ]));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("admin {args:?} printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout))
    })
}

/// The URL `cloud-api serve` connects with for the database of `database_url` (an owner's
/// URL): a login role of that database's own, which `serve --migrate-database-url` creates.
pub fn serving_url(database_url: &str) -> String {
    cloud_api::store::roles::dedicated_login_url(database_url).expect("a postgres:// URL")
}

/// `cloud-api serve` on a free port against `database_url` (the owner's URL: it migrates, and
/// serves as [`serving_url`]); ready when this returns.
pub async fn start_cloud(database_url: &str) -> (Running, String) {
    start_cloud_with(database_url, &[]).await
}

/// [`start_cloud`] with more flags.
pub async fn start_cloud_with(database_url: &str, flags: &[&str]) -> (Running, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let cloud = spawn(
        Command::new(binary("cloud-api"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database-url",
                &serving_url(database_url),
                "--migrate-database-url",
                database_url,
            ])
            .args(flags)
            .env("RUST_LOG", "warn"),
    );
    wait_ready(&format!("{url}/readyz"), Duration::from_secs(30)).await;
    (cloud, url)
}

/// `cluster-agent mapper` on a free port against the API server of `kubeconfig`, with the
/// shared observation token `node-secret` and its outbox in `dir`; ready when this returns.
pub async fn start_mapper(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> (Running, String) {
    start_mapper_with(dir, kubeconfig, &[]).await
}

/// [`start_mapper`] with more flags (cloud upload, watchers).
pub async fn start_mapper_with(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    flags: &[&str],
) -> (Running, String) {
    let mut all = vec!["--shared-token", "node-secret"];
    all.extend_from_slice(flags);
    start_mapper_only_with(dir, kubeconfig, &all).await
}

/// `cluster-agent mapper` on a free port with exactly these flags (no shared token: node
/// agents must bring tokens the stand-in API server reviews); ready when this returns.
pub async fn start_mapper_only_with(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    flags: &[&str],
) -> (Running, String) {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mapper = spawn(
        Command::new(binary("cluster-agent"))
            .args(["mapper", "--listen", &format!("127.0.0.1:{port}"), "--outbox-dir"])
            .arg(dir.join("outbox"))
            .args(flags)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "warn"),
    );
    wait_ready(&format!("{url}/readyz"), Duration::from_secs(30)).await;
    (mapper, url)
}

/// Sends `batch` (node observations, JSON) to the mapper at `mapper` as a node agent with the
/// shared token `node-secret` would; the mapper takes it (202).
pub async fn send_observations(mapper: &str, batch: &serde_json::Value) {
    let url = format!("{mapper}/v1/observations");
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth("node-secret")
        .json(batch)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = answer.status().as_u16();
    assert_eq!(status, 202, "POST {url}: {}", answer.text().await.unwrap_or_default());
}

/// An Istio proxy's metrics endpoint (`http://<ip>:<port>/stats/prometheus`): `text` renders the page from the current count; returns how
/// many times it was scraped.
pub async fn serve_stats(
    ip: &str,
    port: u16,
    count: Arc<AtomicU64>,
    text: fn(u64) -> String,
) -> Arc<AtomicUsize> {
    let scrapes = Arc::new(AtomicUsize::new(0));
    let seen = scrapes.clone();
    let app = axum::Router::new().route(
        "/stats/prometheus",
        axum::routing::get(move || {
            let (count, seen) = (count.clone(), seen.clone());
            async move {
                seen.fetch_add(1, Ordering::SeqCst);
                text(count.load(Ordering::SeqCst))
            }
        }),
    );
    let listener =
        tokio::net::TcpListener::bind((ip, port)).await.expect("binding the metrics port");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serving metrics") });
    scrapes
}

/// The `list` block of the seeds' README (`../shared/seeds`).
pub fn seeds_list() -> String {
    let readme = testkit::need::shared_file("seeds/network-mapper-readme.txt");
    let text =
        std::fs::read_to_string(&readme).unwrap_or_else(|e| panic!("{}: {e}", readme.display()));
    let start = text
        .find("cartservice in namespace otterize-ecom-demo calls:")
        .expect("the seeds' README has the list example");
    let end = start + text[start..].find("\n\n").expect("the list example ends with a blank line");
    format!("{}\n", &text[start..end])
}

/// The seeds' shop (otterize-ecom-demo): its namespace, its services, and who calls whom.
pub use demo::on_cluster::{SHOP_CALLS, SHOP_NAMESPACE, SHOP_SERVICES};

/// The real mapper's `/metrics`: each series' value by name (`intentmap_mapper_...`), labelled
/// series of one name added up; `Err` while it cannot be read (a port-forward not up yet).
pub async fn mapper_metrics(
    mapper: &str,
) -> Result<std::collections::BTreeMap<String, f64>, String> {
    let http = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
    let response = http.get(format!("{mapper}/metrics")).send().await.map_err(|e| e.to_string())?;
    let text = response.text().await.map_err(|e| e.to_string())?;
    let mut metrics = std::collections::BTreeMap::new();
    for sample in mapper_core::prometheus::lines(&text).filter_map(|l| l.ok().flatten()) {
        *metrics.entry(sample.name.to_owned()).or_insert(0.0) += sample.value;
    }
    Ok(metrics)
}

/// Polls `check` until it finds what it looks for (`Ok`); on timeout, panics with what it saw
/// last (`Err`).
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<String, String>,
) -> String {
    let started = std::time::Instant::now();
    loop {
        match check() {
            Ok(found) => return found,
            Err(seen) if started.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// Polls `check` (every 100 ms) until it finds something, or panics after `timeout`.
pub async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The addresses of a Deployment's pods in `namespace` (by its `app` label), IPv4 and IPv6, once
/// there are `count` of them running (each pod has one of each).
pub fn pod_ips(
    cluster: &testkit::cluster::Cluster,
    namespace: &str,
    app: &str,
    count: usize,
) -> Vec<String> {
    let found =
        wait_for(&format!("{count} running pods of {app}"), Duration::from_secs(180), || {
            let ips = cluster
                .kubectl(&[
                    "-n",
                    namespace,
                    "get",
                    "pods",
                    "-l",
                    &format!("app={app}"),
                    "--field-selector=status.phase=Running",
                    "-o",
                    "jsonpath={.items[*].status.podIPs[*].ip}",
                ])
                .map_err(|e| e.to_string())?;
            if ips.split_whitespace().count() == 2 * count {
                Ok(ips)
            } else {
                Err(cluster
                    .kubectl(&["-n", namespace, "get", "pods", "-o", "wide"])
                    .unwrap_or_else(|e| e.to_string()))
            }
        });
    found.split_whitespace().map(str::to_owned).collect()
}

/// Waits (up to two minutes, off the async threads) until `kubectl <args>` lists nothing.
pub fn wait_for_none(cluster: &testkit::cluster::Cluster, what: &str, args: &[&str]) {
    tokio::task::block_in_place(|| {
        wait_for(what, Duration::from_secs(120), || {
            let left = cluster.kubectl(args).map_err(|e| e.to_string())?;
            if left.trim().is_empty() {
                Ok(left)
            } else {
                Err(left)
            }
        })
    });
}
