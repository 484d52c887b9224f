//! A real PostgreSQL for tests and the local demo, with no manual set-up.
//!
//! - [`server`]: the server every test in this process shares. It is the one `DATABASE_URL`
//!   names when that is set (it must allow `CREATE DATABASE`), otherwise a throwaway cluster
//!   started on first use and torn down when the process exits.
//! - [`PgServer::fresh_database`]: a new, empty database per caller, so tests never see each
//!   other's rows and can run concurrently.
//! - [`start_throwaway`]: a cluster of one's own (the demo, scripts), stopped when the returned
//!   [`ThrowawayPg`] is stopped or dropped.
//!
//! A throwaway cluster is `initdb`-ed into a fresh directory under [`std::env::temp_dir`] and
//! listens on a free port on 127.0.0.1 with `trust` authentication for the superuser
//! `postgres`. Durability is switched off (`fsync`, `synchronous_commit`, `full_page_writes`)
//! since the data is thrown away anyway. PostgreSQL refuses to run as root, so when we are root
//! the cluster belongs to, and runs as, the `postgres` system user (via `runuser`).
//!
//! Statics are never dropped and a test process can die any way it likes, so every cluster also
//! gets a detached watchdog process: once the process that started the cluster is gone, it
//! stops the server and removes its directory.
//!
//! The binaries (`initdb`, `pg_ctl`, `postgres`) come from `PATH` or the newest
//! `/usr/lib/postgresql/*/bin`; `scripts/ensure-postgres.sh` installs them.
//!
//! Nothing here holds runtime-bound resources (pools, connections) beyond a single call:
//! every `#[tokio::test]` has a runtime of its own, and the shared [`PgServer`] is only URLs
//! and paths.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;
use tracing::{debug, info, warn};

use crate::process::tail;

/// The system user a cluster runs as when this process is root.
const PG_SYSTEM_USER: &str = "postgres";
/// The superuser `initdb` creates in every throwaway cluster.
const PG_SUPERUSER: &str = "postgres";
/// How long a throwaway cluster may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How many fresh ports to try when another process grabs ours between picking and binding.
const PORT_ATTEMPTS: usize = 3;

static SERVER: OnceCell<PgServer> = OnceCell::const_new();

/// The server this process's tests share: the one `DATABASE_URL` names if it is set, else a
/// throwaway cluster started on the first call (and torn down when the process exits).
///
/// Every call returns the same server. If starting the cluster fails, the error is returned
/// and the next call tries again.
pub async fn server() -> Result<&'static PgServer> {
    SERVER
        .get_or_try_init(|| async {
            match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => {
                    debug!("using the PostgreSQL server DATABASE_URL names");
                    Ok(PgServer::external(url.trim().to_owned()))
                }
                // Only the watchdog cleans this one up: it lives as long as the process.
                _ => Ok(start_throwaway().await?.detach()),
            }
        })
        .await
}

/// A PostgreSQL server to create databases in.
#[derive(Debug, Clone)]
pub struct PgServer {
    /// A superuser URL to the `postgres` database (or `DATABASE_URL` as given).
    admin_url: String,
    /// Whether this process started the server (a throwaway cluster).
    owned: bool,
    /// The cluster's data directory, for a throwaway cluster; it also holds the Unix socket
    /// and the server log (`log`).
    data_dir: Option<PathBuf>,
}

impl PgServer {
    fn external(admin_url: String) -> Self {
        Self { admin_url, owned: false, data_dir: None }
    }

    /// A superuser connection URL to the `postgres` database, such as
    /// `postgres://postgres@127.0.0.1:PORT/postgres` (for `DATABASE_URL`: that URL as given).
    pub fn admin_url(&self) -> &str {
        &self.admin_url
    }

    /// Whether this process started the server, as opposed to `DATABASE_URL` naming it.
    pub fn is_owned(&self) -> bool {
        self.owned
    }

    /// The data directory of a throwaway cluster; `None` for `DATABASE_URL`.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The admin URL with its database replaced by `database`.
    pub fn url_for(&self, database: &str) -> String {
        with_database(&self.admin_url, database)
    }

    /// Creates an empty database named `<prefix>_<random>` and returns its URL.
    ///
    /// `prefix` is lowercased, characters other than `[a-z0-9_]` become `_`, and it is cut to
    /// 30 characters (identifiers are limited to 63 bytes). Safe to call concurrently.
    pub async fn fresh_database(&self, prefix: &str) -> Result<String> {
        let name = format!("{}_{}", sanitize_prefix(prefix), uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&self.admin_url)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", self.admin_url))?;
        // CREATE DATABASE can't run in a transaction block: send it as a simple query.
        let sql = format!("CREATE DATABASE \"{name}\"");
        let created =
            conn.execute(sql.as_str()).await.with_context(|| format!("creating database {name}"));
        // Closing politely only spares the server a log line; its failure doesn't matter.
        let _ = conn.close().await;
        created?;
        debug!(database = %name, "created a fresh database");
        Ok(self.url_for(&name))
    }
}

/// A throwaway cluster of one's own. Stopped, and its directory removed, by [`stop`] or on
/// drop, and in any case by its watchdog once this process exits.
///
/// Dereferences to its [`PgServer`].
///
/// [`stop`]: ThrowawayPg::stop
#[derive(Debug)]
pub struct ThrowawayPg {
    server: PgServer,
    data_dir: PathBuf,
    pg_ctl: PathBuf,
    run_as: RunAs,
    stopped: bool,
}

impl Deref for ThrowawayPg {
    type Target = PgServer;

    fn deref(&self) -> &PgServer {
        &self.server
    }
}

impl ThrowawayPg {
    /// The server's details.
    pub fn server(&self) -> &PgServer {
        &self.server
    }

    /// Stops the server (immediate shutdown: it is being thrown away) and removes its data
    /// directory. Problems are logged, not returned: there is nothing a caller could do.
    pub fn stop(mut self) {
        self.stop_now();
    }

    /// Leaves the cluster running for as long as this process lives; the watchdog cleans up.
    fn detach(mut self) -> PgServer {
        self.stopped = true;
        self.server.clone()
    }

    fn stop_now(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        info!(dir = %self.data_dir.display(), "stopping throwaway PostgreSQL");
        // Synchronous on purpose: this also runs from Drop, possibly outside any runtime.
        // Without a postmaster.pid the server never started (a start cut short): nothing for
        // pg_ctl to stop, and a postmaster still starting is stopped below.
        if self.data_dir.join("postmaster.pid").exists() {
            let mut cmd = self.run_as.std_command(&self.pg_ctl);
            cmd.arg("stop")
                .args(["-m", "immediate", "-w", "-t", "30", "-D"])
                .arg(&self.data_dir)
                .current_dir(std::env::temp_dir())
                .stdin(Stdio::null());
            match cmd.output() {
                Ok(out) if out.status.success() => {}
                // E.g. initdb's single-user server holds the pid file: stopped below either way.
                Ok(out) => info!(
                    dir = %self.data_dir.display(),
                    "pg_ctl stop failed (whatever still runs in the directory is stopped next): {}",
                    describe_output(&out)
                ),
                Err(err) => warn!("could not run pg_ctl stop: {err}"),
            }
        }
        // A start cut short (the caller was cancelled, e.g. on a signal) can leave `initdb` and
        // the `postgres` it runs, or a postmaster pg_ctl knew nothing of yet: nothing may keep
        // running in, or writing to, the directory about to be removed.
        stop_processes_using(&self.data_dir);
        match std::fs::remove_dir_all(&self.data_dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => warn!(dir = %self.data_dir.display(), "could not remove: {err}"),
        }
    }
}

impl Drop for ThrowawayPg {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Stops every process whose command line names `dir` (`initdb`, the `postgres` it runs, a
/// postmaster, `runuser` around them; never the watchdog, which finds the directory in its
/// environment): SIGQUIT, PostgreSQL's immediate shutdown, then SIGKILL to any still there
/// after 2 s. Usually there are none: `pg_ctl stop` has stopped the server.
fn stop_processes_using(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let needle = dir.as_os_str().as_bytes();
    let me = std::process::id();
    // A zombie's cmdline is empty, so only running processes match.
    let using = || -> Vec<String> {
        let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
        procs
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle))
            })
            .map(|pid| pid.to_string())
            .collect()
    };
    for signal in ["QUIT", "KILL", ""] {
        let pids = using();
        if pids.is_empty() {
            return;
        }
        if signal.is_empty() {
            warn!(dir = %dir.display(), ?pids, "processes in the throwaway PostgreSQL's directory survived SIGKILL");
            return;
        }
        info!(dir = %dir.display(), ?pids, signal, "stopping processes left in the throwaway PostgreSQL's directory");
        let _ = std::process::Command::new("kill")
            .args(["-s", signal])
            .args(&pids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !using().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Starts a throwaway cluster: `initdb` into a fresh temporary directory, then `pg_ctl start`
/// on a free port on 127.0.0.1, waiting until it accepts connections.
///
/// The cluster is stopped and removed when the returned guard is stopped or dropped, and, via
/// a detached watchdog, when this process exits however it exits.
pub async fn start_throwaway() -> Result<ThrowawayPg> {
    let started = Instant::now();
    let bins = PgBins::find()?;
    let run_as = RunAs::detect()?;

    let data_dir = std::env::temp_dir().join(format!(
        "testkit-pg-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    // pg_ctl hands its -o options to a shell; keep the path quotable.
    if data_dir.to_string_lossy().contains(['\'', '\n']) {
        bail!(
            "temporary directory {} has an unusable name for a PostgreSQL cluster",
            data_dir.display()
        );
    }
    info!(dir = %data_dir.display(), bin = %bins.dir.display(), "starting throwaway PostgreSQL");
    create_private_dir(&data_dir, &run_as)?;

    // From here on the guard cleans up if anything fails (or we are cancelled).
    let mut guard = ThrowawayPg {
        server: PgServer {
            admin_url: String::new(),
            owned: true,
            data_dir: Some(data_dir.clone()),
        },
        data_dir: data_dir.clone(),
        pg_ctl: bins.pg_ctl.clone(),
        run_as: run_as.clone(),
        stopped: false,
    };
    spawn_watchdog(&data_dir, &bins.pg_ctl, &run_as)?;

    initdb(&bins, &run_as, &data_dir).await?;
    let port = pg_ctl_start(&bins, &run_as, &data_dir).await?;
    let admin_url = format!("postgres://{PG_SUPERUSER}@127.0.0.1:{port}/postgres");
    wait_until_accepting(&admin_url, &data_dir).await?;
    guard.server.admin_url = admin_url;

    info!(
        url = %guard.server.admin_url,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "throwaway PostgreSQL is up"
    );
    Ok(guard)
}

/// Where the server binaries are.
struct PgBins {
    dir: PathBuf,
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl PgBins {
    const NAMES: [&'static str; 3] = ["initdb", "pg_ctl", "postgres"];

    /// `initdb` from PATH (resolving symlinks, since pg_ctl and postgres find each other next
    /// to their real paths), else the highest `/usr/lib/postgresql/<version>/bin`.
    fn find() -> Result<Self> {
        let from_path = std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("initdb"))
                .find(|candidate| is_executable(candidate))
                .and_then(|initdb| std::fs::canonicalize(initdb).ok())
                .and_then(|real| real.parent().map(Path::to_path_buf))
        });
        let dir = from_path
            .filter(|dir| Self::complete(dir))
            .or_else(|| newest_debian_bindir(Path::new("/usr/lib/postgresql")))
            .context(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in PATH or \
                 /usr/lib/postgresql/*/bin: run scripts/ensure-postgres.sh to install them \
                 (or set DATABASE_URL to an existing server)",
            )?;
        Ok(Self { initdb: dir.join("initdb"), pg_ctl: dir.join("pg_ctl"), dir })
    }

    fn complete(dir: &Path) -> bool {
        Self::NAMES.iter().all(|name| is_executable(&dir.join(name)))
    }
}

/// The `<root>/<version>/bin` with all the binaries and the highest version.
fn newest_debian_bindir(root: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(root).ok()?;
    entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = version_key(entry.file_name().to_str()?)?;
            let bin = entry.path().join("bin");
            PgBins::complete(&bin).then_some((version, bin))
        })
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, bin)| bin)
}

/// "15" -> [15], "9.6" -> [9, 6]; anything else is not a version directory.
fn version_key(name: &str) -> Option<Vec<u32>> {
    name.split('.').map(|part| part.parse().ok()).collect()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Who runs the server's programs: ourselves, or (when we are root) the `postgres` user.
#[derive(Debug, Clone)]
enum RunAs {
    Me,
    User { name: String, uid: u32, gid: u32 },
}

impl RunAs {
    fn detect() -> Result<Self> {
        if effective_uid()? != 0 {
            return Ok(Self::Me);
        }
        let id = |flag: &str| -> Option<u32> {
            let out = std::process::Command::new("id")
                .args([flag, PG_SYSTEM_USER])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            if !out.status.success() {
                return None;
            }
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) if uid != 0 => {
                Ok(Self::User { name: PG_SYSTEM_USER.to_owned(), uid, gid })
            }
            _ => bail!(
                "running as root, which PostgreSQL refuses, and there is no non-root \
                 `{PG_SYSTEM_USER}` user to run it as: run scripts/ensure-postgres.sh"
            ),
        }
    }

    /// The words that run a program as this user (empty for ourselves).
    fn prefix(&self) -> Vec<String> {
        match self {
            Self::Me => Vec::new(),
            Self::User { name, .. } => {
                vec!["runuser".into(), "-u".into(), name.clone(), "--".into()]
            }
        }
    }

    fn std_command(&self, program: &Path) -> std::process::Command {
        let prefix = self.prefix();
        match prefix.split_first() {
            None => std::process::Command::new(program),
            Some((first, rest)) => {
                let mut cmd = std::process::Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
        }
    }

    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::from(self.std_command(program));
        cmd.kill_on_drop(true).stdin(Stdio::null());
        cmd
    }
}

/// The effective uid, from /proc (no `unsafe` libc call), else `id -u`.
fn effective_uid() -> Result<u32> {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        // "Uid:\t<real>\t<effective>\t<saved>\t<fs>"
        if let Some(euid) = status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            .and_then(|euid| euid.parse().ok())
        {
            return Ok(euid);
        }
    }
    let out = std::process::Command::new("id")
        .arg("-u")
        .stdin(Stdio::null())
        .output()
        .context("running `id -u`")?;
    String::from_utf8_lossy(&out.stdout).trim().parse().context("parsing the output of `id -u`")
}

/// Creates `dir` (which must not exist), mode 0700, owned by whoever runs the server.
fn create_private_dir(dir: &Path, run_as: &RunAs) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("setting the permissions of {}", dir.display()))?;
    if let RunAs::User { name, uid, gid } = run_as {
        if let Err(err) = std::os::unix::fs::chown(dir, Some(*uid), Some(*gid)) {
            let _ = std::fs::remove_dir(dir);
            return Err(err).with_context(|| format!("giving {} to {name}", dir.display()));
        }
    }
    Ok(())
}

/// A detached process that, once this process is gone, stops the cluster in `dir` and removes
/// the directory ([`crate::process::spawn_watchdog`]).
fn spawn_watchdog(dir: &Path, pg_ctl: &Path, run_as: &RunAs) -> Result<()> {
    const CLEANUP: &str = r#"$TK_PG_RUN_AS "$TK_PG_CTL" stop -m immediate -w -t 30 -D "$TK_DIR"
if [ -f "$TK_DIR/postmaster.pid" ]; then
    kill -QUIT "$(head -n 1 "$TK_DIR/postmaster.pid")"
    sleep 1
fi
rm -rf "$TK_DIR"
"#;
    let run_as = run_as.prefix().join(" ");
    crate::process::spawn_watchdog(
        "testkit-pg-watchdog",
        dir,
        CLEANUP,
        &[("TK_PG_CTL", pg_ctl.as_os_str()), ("TK_PG_RUN_AS", run_as.as_ref())],
        "the throwaway PostgreSQL",
    )
}

async fn initdb(bins: &PgBins, run_as: &RunAs, dir: &Path) -> Result<()> {
    let out = run_as
        .command(&bins.initdb)
        .args(["-A", "trust", "-U", PG_SUPERUSER, "--no-sync", "-E", "UTF8"])
        // The C locale works with any encoding and needs no locales installed.
        .args(["--locale", "C", "-D"])
        .arg(dir)
        // The server user may not be able to enter our working directory.
        .current_dir(dir)
        .output()
        .await
        .with_context(|| format!("running {}", bins.initdb.display()))?;
    if !out.status.success() {
        let hint = match run_as {
            RunAs::User { name, .. } => format!(
                "\n(initdb runs as `{name}`, which must be able to reach {}; \
                 point TMPDIR elsewhere if it can't)",
                dir.display()
            ),
            RunAs::Me => String::new(),
        };
        bail!("initdb failed for {}: {}{hint}", dir.display(), describe_output(&out));
    }
    Ok(())
}

/// Starts the server on a free port, retrying with another port if someone else took it first.
async fn pg_ctl_start(bins: &PgBins, run_as: &RunAs, dir: &Path) -> Result<u16> {
    let log = dir.join("log");
    for attempt in 1..=PORT_ATTEMPTS {
        let port = crate::process::free_port();
        let options = format!(
            "-p {port} -k '{}' -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
            dir.display()
        );
        let out = run_as
            .command(&bins.pg_ctl)
            .args(["-w", "-t", &START_TIMEOUT.as_secs().to_string(), "-o", &options])
            .arg("-D")
            .arg(dir)
            .arg("-l")
            .arg(&log)
            .arg("start")
            .current_dir(dir)
            .output()
            .await
            .with_context(|| format!("running {}", bins.pg_ctl.display()))?;
        if out.status.success() {
            return Ok(port);
        }
        let log_tail = tail(&log, 30);
        let port_taken = log_tail.contains("could not bind") || log_tail.contains("in use");
        if port_taken && attempt < PORT_ATTEMPTS {
            warn!(port, "port taken before PostgreSQL could bind it; trying another");
            continue;
        }
        bail!(
            "pg_ctl start failed for {}: {}\n--- server log ({}) ---\n{log_tail}",
            dir.display(),
            describe_output(&out),
            log.display()
        );
    }
    unreachable!("the last attempt returns")
}

async fn wait_until_accepting(url: &str, dir: &Path) -> Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match PgConnection::connect(url).await {
            Ok(conn) => {
                let _ = conn.close().await;
                return Ok(());
            }
            Err(err) if Instant::now() >= deadline => {
                bail!(
                    "throwaway PostgreSQL at {url} did not accept connections within {:?}: \
                     {err}\n--- server log ---\n{}",
                    START_TIMEOUT,
                    tail(&dir.join("log"), 30)
                );
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn describe_output(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut text = out.status.to_string();
    for stream in [stderr.trim(), stdout.trim()] {
        if !stream.is_empty() {
            text.push('\n');
            text.push_str(stream);
        }
    }
    text
}

/// Lowercase `[a-z0-9_]`, at most 30 characters, never empty.
fn sanitize_prefix(prefix: &str) -> String {
    let cleaned: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(30)
        .collect();
    if cleaned.is_empty() {
        "db".to_owned()
    } else {
        cleaned
    }
}

/// `url` with its path (the database) replaced, keeping the scheme, authority and query.
fn with_database(url: &str, database: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let authority_end =
        url[authority_start..].find(['/', '?', '#']).map_or(url.len(), |i| authority_start + i);
    let rest_start = url[authority_end..].find(['?', '#']).map_or(url.len(), |i| authority_end + i);
    format!("{}/{database}{}", &url[..authority_end], &url[rest_start..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::process_alive;

    async fn select_one(url: &str) -> Result<i32> {
        let mut conn = PgConnection::connect(url).await?;
        let one: i32 = sqlx::query_scalar("SELECT 1").fetch_one(&mut conn).await?;
        conn.close().await?;
        Ok(one)
    }

    async fn has_table(url: &str, table: &str) -> Result<bool> {
        let mut conn = PgConnection::connect(url).await?;
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = $1)",
        )
        .bind(table)
        .fetch_one(&mut conn)
        .await?;
        conn.close().await?;
        Ok(found)
    }

    fn postmaster_pid(dir: &Path) -> u32 {
        let pidfile = std::fs::read_to_string(dir.join("postmaster.pid")).unwrap();
        pidfile.lines().next().unwrap().trim().parse().unwrap()
    }

    #[test]
    fn replaces_the_database_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t_1"),
            "postgres://postgres@127.0.0.1:5432/t_1"
        );
        assert_eq!(
            with_database("postgres://u:p%2Fw@db.example:5432", "x"),
            "postgres://u:p%2Fw@db.example:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u@h/old?sslmode=disable&application_name=a", "x"),
            "postgresql://u@h/x?sslmode=disable&application_name=a"
        );
        assert_eq!(
            with_database("postgres://u@h?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres:///old?host=/run/postgresql", "x"),
            "postgres:///x?host=/run/postgresql"
        );
    }

    #[test]
    fn sanitizes_prefixes() {
        assert_eq!(sanitize_prefix("Cloud-API tests"), "cloud_api_tests");
        assert_eq!(sanitize_prefix(""), "db");
        assert_eq!(sanitize_prefix(&"x".repeat(100)).len(), 30);
    }

    #[test]
    fn picks_the_highest_version_directory() {
        assert!(version_key("16") > version_key("9.6"));
        assert!(version_key("15") > version_key("9"));
        assert_eq!(version_key("bin"), None);
    }

    #[tokio::test]
    async fn pg_server_is_shared() {
        let first = server().await.unwrap();
        let second = server().await.unwrap();
        assert!(std::ptr::eq(first, second));
        assert_eq!(first.admin_url(), second.admin_url());
        assert_eq!(select_one(first.admin_url()).await.unwrap(), 1);
    }

    #[test]
    fn pg_server_is_shared_across_runtimes() {
        // Every #[tokio::test] has a runtime of its own; the server must outlive them.
        let runtime =
            || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let url = runtime().block_on(async { server().await.unwrap().admin_url().to_owned() });
        runtime().block_on(async {
            assert_eq!(server().await.unwrap().admin_url(), url);
            let fresh = server().await.unwrap().fresh_database("pg_runtimes").await;
            assert_eq!(select_one(&fresh.unwrap()).await.unwrap(), 1);
        });
    }

    #[tokio::test]
    async fn pg_fresh_databases_are_isolated() {
        let server = server().await.unwrap();
        let a = server.fresh_database("pg_isolation").await.unwrap();
        let b = server.fresh_database("pg_isolation").await.unwrap();
        assert_ne!(a, b);
        assert!(a.contains("/pg_isolation_"), "{a}");
        assert_eq!(select_one(&a).await.unwrap(), 1);
        assert_eq!(select_one(&b).await.unwrap(), 1);

        let mut conn = PgConnection::connect(&a).await.unwrap();
        sqlx::raw_sql("CREATE TABLE only_in_a (id int PRIMARY KEY)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        assert!(has_table(&a, "only_in_a").await.unwrap());
        assert!(!has_table(&b, "only_in_a").await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn pg_fresh_database_is_safe_concurrently() {
        let server = server().await.unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..24 {
            tasks.spawn(async move { server.fresh_database("pg_concurrent").await });
        }
        let mut urls = std::collections::HashSet::new();
        while let Some(url) = tasks.join_next().await {
            let url = url.unwrap().unwrap();
            assert_eq!(select_one(&url).await.unwrap(), 1);
            assert!(urls.insert(url));
        }
        assert_eq!(urls.len(), 24);
    }

    #[tokio::test]
    async fn pg_throwaway_stop_leaves_nothing_behind() {
        let pg = start_throwaway().await.unwrap();
        assert!(pg.is_owned());
        let url = pg.admin_url().to_owned();
        let dir = pg.data_dir().unwrap().to_path_buf();
        assert!(dir.join("PG_VERSION").exists());
        assert_eq!(select_one(&url).await.unwrap(), 1);
        let pid = postmaster_pid(&dir);
        assert!(process_alive(pid));

        pg.stop();

        assert!(!dir.exists(), "{} still exists", dir.display());
        assert!(!process_alive(pid), "postmaster {pid} still runs");
        assert!(select_one(&url).await.is_err());
    }

    #[tokio::test]
    async fn pg_throwaway_drop_stops_it() {
        let pg = start_throwaway().await.unwrap();
        let url = pg.url_for("postgres");
        let dir = pg.data_dir().unwrap().to_path_buf();
        let pid = postmaster_pid(&dir);
        drop(pg);
        assert!(!dir.exists());
        assert!(!process_alive(pid));
        assert!(select_one(&url).await.is_err());
    }

    const WATCHDOG_REPORT: &str = "TESTKIT_PG_WATCHDOG_REPORT";

    /// Run by `pg_watchdog_cleans_up_after_a_dead_process` in a child process: starts a
    /// cluster, reports where it is, and exits without running any destructor.
    #[tokio::test]
    #[ignore = "helper run in a child process by pg_watchdog_cleans_up_after_a_dead_process"]
    async fn pg_watchdog_helper() {
        let Some(report) = std::env::var_os(WATCHDOG_REPORT) else {
            return;
        };
        let pg = start_throwaway().await.unwrap();
        let dir = pg.data_dir().unwrap();
        let text = format!("{}\n{}\n{}\n", pg.admin_url(), dir.display(), postmaster_pid(dir));
        std::fs::write(report, text).unwrap();
        std::process::exit(0);
    }

    #[tokio::test]
    async fn pg_watchdog_cleans_up_after_a_dead_process() {
        let report = std::env::temp_dir()
            .join(format!("testkit-pg-watchdog-{}.txt", uuid::Uuid::new_v4().simple()));
        let status = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "pg::tests::pg_watchdog_helper"])
            .env(WATCHDOG_REPORT, &report)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .status()
            .await
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&report).unwrap();
        let _ = std::fs::remove_file(&report);
        let mut lines = text.lines();
        let (url, dir, pid) = (
            lines.next().unwrap().to_owned(),
            PathBuf::from(lines.next().unwrap()),
            lines.next().unwrap().parse::<u32>().unwrap(),
        );

        let deadline = Instant::now() + Duration::from_secs(20);
        while (dir.exists() || process_alive(pid)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!dir.exists(), "{} still exists", dir.display());
        assert!(!process_alive(pid), "postmaster {pid} still runs");
        assert!(select_one(&url).await.is_err());
    }
}
