//! Processes, ports and directories a test makes and must not leave behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

/// A port nothing listens on right now on 127.0.0.1 (the kernel's pick for port 0, released
/// again).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `N` different free ports on 127.0.0.1 (each held until all are picked, so none is picked
/// twice).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    use anyhow::Context as _;
    let listeners = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("finding free ports on 127.0.0.1")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// A fresh directory `<temp>/<prefix>-<uuid>`, removed with everything in it on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names of the files in `dir` whose names end with `suffix`, sorted; panics naming `dir`
/// when it cannot be read.
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<String> {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| {
            let name = e.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display())).file_name();
            name.to_string_lossy().into_owned()
        })
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// Whether process `pid` is running (a zombie nobody has reaped yet counts as gone).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "<pid> (<comm>) <state> ..."; comm may contain spaces, so look after the ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
            .unwrap_or(true),
        Err(_) => false,
    }
}

/// The last `lines` lines of a file (a log), or a note on why there are none.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(no log at {}: {err})", path.display()),
    }
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with stdout discarded and stderr inherited (so its complaints show in the
/// test's output); panics if it cannot start.
pub fn spawn(cmd: &mut Command) -> Running {
    Running(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {cmd:?}: {e}")),
    )
}

/// Polls `url` with `http` until it answers 2xx; an error after `timeout`.
pub async fn wait_ready(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if started.elapsed() > timeout {
            bail!("{url} did not become ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A detached watchdog: once this process is gone, it runs the shell script `cleanup` on `dir`
/// (`$TK_DIR` in the script; `env` adds variables, `PATH` among them if the script needs one).
/// It ends by itself when the directory disappears (an orderly stop). `name` is its process
/// name; `what` says what it guards, in the error.
///
/// Started through an intermediate shell that exits at once, so it is reparented rather than
/// left a zombie of ours; `setsid` puts it in its own session, out of reach of the terminal's
/// Ctrl-C and hang-ups aimed at us. All its standard streams are /dev/null, so it never keeps a
/// pipe of the test harness open.
pub fn spawn_watchdog(
    name: &str,
    dir: &Path,
    cleanup: &str,
    env: &[(&str, &std::ffi::OsStr)],
    what: &str,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let script = format!(
        "while kill -0 \"$TK_PARENT\" 2>/dev/null && [ -d \"$TK_DIR\" ]; do sleep 1; done\n\
         [ -d \"$TK_DIR\" ] || exit 0\n{cleanup}"
    );
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"setsid sh -c "$1" </dev/null >/dev/null 2>&1 &"#)
        .arg(name)
        .arg(script)
        .env("TK_PARENT", std::process::id().to_string())
        .env("TK_DIR", dir)
        .envs(env.iter().copied())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("starting the cleanup watchdog for {what}"))?;
    if !status.success() {
        bail!("starting the cleanup watchdog for {what}: sh {status}");
    }
    Ok(())
}

/// Forwards every TCP connection made to its address to `to`, until dropped (connections already
/// made run on until either side closes). For a service of the host that listens on loopback
/// only (the test PostgreSQL) to be reached from elsewhere, e.g. from the real cluster's pods at
/// the node's address.
pub struct TcpForward {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl TcpForward {
    /// Listens on `listen` (port 0 picks a free one) and forwards to `to`.
    pub fn start(listen: std::net::SocketAddr, to: std::net::SocketAddr) -> anyhow::Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| anyhow::anyhow!("listening on {listen} to forward to {to}: {e}"))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let accepting = std::thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((inbound, _)) => {
                        if let Ok(outbound) = std::net::TcpStream::connect(to) {
                            let _ = inbound.set_nonblocking(false);
                            pipe(inbound, outbound);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(TcpForward { addr, stop, accepting: Some(accepting) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

/// Copies each direction on its own thread; each closes its writing half when its reader ends.
fn pipe(a: std::net::TcpStream, b: std::net::TcpStream) {
    for (mut from, mut to) in [(a.try_clone(), b.try_clone()), (Ok(b), Ok(a))]
        .into_iter()
        .filter_map(|(from, to)| Some((from.ok()?, to.ok()?)))
    {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

impl Drop for TcpForward {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}
