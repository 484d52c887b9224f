//! What the benchmarks that run the real `cloud-api serve` share: their list settings, the
//! server child process, stopping on a signal, and `cloud-api admin`.

use std::future::Future;
use std::process::{Child, Command};

use anyhow::{bail, ensure, Context, Result};

/// A comma-separated list of numbers from the environment variable `name` (`_` allowed as a
/// thousands separator), else `default`.
pub fn env_list(name: &str, default: &str) -> Result<Vec<usize>> {
    let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let value = value.as_deref().unwrap_or(default);
    ensure!(value.len() <= 1_000, "{name} is too long");
    value
        .split(',')
        .map(|s| {
            s.trim()
                .replace('_', "")
                .parse::<usize>()
                .with_context(|| format!("{name}: {s:?} is not a number"))
        })
        .collect()
}

/// A running `cloud-api serve`, stopped when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bench` until it ends or the process gets SIGINT, SIGTERM or SIGHUP: then `bench` is
/// dropped, and with it what it started (the server child, the throwaway PostgreSQL), and the
/// benchmark fails saying so.
pub async fn until_signal(bench: impl Future<Output = Result<()>>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::select! {
        done = bench => done,
        _ = interrupt.recv() => bail!("interrupted: the server and PostgreSQL it started are stopped"),
        _ = terminate.recv() => bail!("terminated: the server and PostgreSQL it started are stopped"),
        _ = hangup.recv() => bail!("hung up: the server and PostgreSQL it started are stopped"),
    }
}

/// `cloud-api admin ARGS --output json` as the schema owner.
pub fn admin(owner_url: &str, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_cloud-api"))
        .arg("admin")
        .args(args)
        .args(["--output", "json", "--database-url", owner_url])
        .output()
        .context("running cloud-api admin")?;
    if !out.status.success() {
        bail!("cloud-api admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}
