//! `intentmap-demo` (the real binary) leaves nothing behind however it is stopped: SIGTERM while
//! serving, SIGTERM, SIGINT or SIGHUP during its set-up, and SIGKILL (after which its processes
//! still die with it and `--clean`, which every start also runs, removes the rest).
//!
//! "Nothing" is checked from outside, not from the demo's own records: every process whose
//! parent chain led to the demo (read from /proc just before the signal, identified by pid and
//! start time) is gone, and so is every process in their process groups, every process whose
//! command line names the demo's output directory, its throwaway PostgreSQL (the postmaster and
//! its children, the data directory, the watchdog), its ports, and (as root, where the demo
//! makes network namespaces) every namespace and link named after it (`im<pid>-…`). Not as root
//! the demo replays its traffic and makes no namespaces; everything else is checked the same.
//!
//! Needs `cargo build --workspace --bins` first (as `scripts/test.sh` does). The tests run one
//! demo at a time.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Each demo starts a PostgreSQL, a cloud, four agents and (as root) eight namespaces: one at a
/// time is plenty for a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

// ---- /proc ----

/// A process as /proc shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: u32,
    ppid: u32,
    pgrp: i32,
    start: u64,
    state: char,
    cmdline: String,
}

impl Proc {
    fn read(pid: u32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim().to_owned())
            .unwrap_or_default();
        Some(Proc {
            pid,
            state: f.first()?.chars().next()?,
            ppid: f.get(1)?.parse().ok()?,
            pgrp: f.get(2)?.parse().ok()?,
            start: f.get(19)?.parse().ok()?,
            cmdline,
        })
    }

    fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }

    /// Still running and still the same process (not a reused pid).
    fn still_running(&self) -> bool {
        Proc::read(self.pid).is_some_and(|now| now.start == self.start && now.running())
    }
}

impl std::fmt::Display for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cmd: String = self.cmdline.chars().take(120).collect();
        write!(f, "{} (pgrp {}, state {}): {cmd}", self.pid, self.pgrp, self.state)
    }
}

fn all_processes() -> Vec<Proc> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(Proc::read)
        .filter(Proc::running)
        .collect()
}

/// The running processes whose parent chain leads to `root`.
fn descendants(root: u32) -> Vec<Proc> {
    let all = all_processes();
    let mut children: HashMap<u32, Vec<&Proc>> = HashMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p);
    }
    let (mut found, mut todo) = (Vec::new(), vec![root]);
    while let Some(pid) = todo.pop() {
        for child in children.get(&pid).into_iter().flatten() {
            todo.push(child.pid);
            found.push((*child).clone());
        }
    }
    found
}

fn environ_has(pid: u32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
}

use demo::cleanup::wait_until;
use testkit::need::is_root;

// ---- the network ----

fn netns_names() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip (iproute2; scripts/setup.sh installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn link_names() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip (iproute2; scripts/setup.sh installs it)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// The demo's namespaces and links: named `im<pid>-…`.
fn named_after(names: Vec<String>, pid: u32) -> Vec<String> {
    let prefix = format!("im{pid}-");
    names.into_iter().filter(|n| n.starts_with(&prefix)).collect()
}

// ---- the demo ----

/// The real `intentmap-demo`, its output collected as it comes.
struct Demo {
    child: Child,
    pid: u32,
    out: PathBuf,
    /// Everything it printed (stdout and stderr), for failure messages.
    log: Arc<Mutex<String>>,
    stdout: mpsc::Receiver<String>,
    /// The stdout lines received so far.
    lines: Vec<String>,
    exited: Option<ExitStatus>,
}

impl Demo {
    /// Starts the demo on a free port, its output in a fresh directory, with a throwaway
    /// PostgreSQL of its own.
    fn start() -> Demo {
        let out = std::env::temp_dir()
            .join(format!("e2e-demo-signals-{}", uuid::Uuid::new_v4().simple()));
        let mut child = Command::new(tests::binary("intentmap-demo"))
            .args(["--listen", &format!("127.0.0.1:{}", tests::free_port()), "--out"])
            .arg(&out)
            .env_remove("DATABASE_URL")
            .env_remove("DEMO_EXIT")
            .env_remove("DEMO_REPLAY")
            .env_remove("DEMO_OUT")
            .env_remove("DEMO_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting intentmap-demo");
        let pid = child.id();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, stdout) = mpsc::channel();
        let out_log = log.clone();
        let out_pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                println!("[demo {pid}] {line}");
                out_log
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push_str(&format!("{line}\n"));
                let _ = tx.send(line);
            }
        });
        let err_log = log.clone();
        let mut err_pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = err_pipe.read(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]);
                eprint!("{text}");
                err_log.lock().unwrap_or_else(PoisonError::into_inner).push_str(&text);
            }
        });
        Demo { child, pid, out, log, stdout, lines: Vec::new(), exited: None }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn drain(&mut self) {
        while let Ok(line) = self.stdout.try_recv() {
            self.lines.push(line);
        }
    }

    fn printed(&mut self, needle: &str) -> Option<String> {
        self.drain();
        self.lines.iter().find(|l| l.contains(needle)).cloned()
    }

    /// Waits until the demo prints a line containing `needle`; panics if it exits first or
    /// `timeout` passes.
    fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.printed(needle) {
                return line;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the demo exited ({status}) before printing {needle:?}; its output:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not print {needle:?} within {timeout:?}; its output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until one of the demo's descendants' command line contains `needle`.
    fn wait_for_descendant(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !descendants(self.pid).iter().any(|p| p.cmdline.contains(needle)) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "the demo exited ({status}) before starting {needle:?}; its output:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not start {needle:?} within {timeout:?}; its output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.pid.to_string()])
            .status()
            .expect("kill (procps)");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    /// Waits (at most `timeout`) for the demo to exit.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                self.exited = Some(status);
                // The output threads end with the pipes; give them a moment to deliver.
                std::thread::sleep(Duration::from_millis(200));
                self.drain();
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within {timeout:?} of the signal; its output:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `intentmap-demo --clean` with this demo's --out.
    fn clean(&self) -> std::process::Output {
        Command::new(tests::binary("intentmap-demo"))
            .arg("--clean")
            .arg("--out")
            .arg(&self.out)
            .env_remove("DEMO_OUT")
            .output()
            .expect("running intentmap-demo --clean")
    }
}

impl Drop for Demo {
    /// A failed test leaves nothing either.
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            std::thread::sleep(Duration::from_millis(500));
        }
        let _ = self.clean();
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// What the demo is running and has made, read from outside just before it is signalled.
struct Snapshot {
    demo_pid: u32,
    out: PathBuf,
    /// Its descendants, and their process groups (other than the test's own).
    processes: Vec<Proc>,
    groups: HashSet<i32>,
    /// The throwaway PostgreSQL: data directories, the postmaster and its children.
    pg_dirs: Vec<PathBuf>,
    postgres: Vec<Proc>,
    namespaces: Vec<String>,
    links: Vec<String>,
}

impl Snapshot {
    fn take(demo: &Demo) -> Snapshot {
        let processes = descendants(demo.pid);
        let own_group = Proc::read(std::process::id()).unwrap().pgrp;
        let groups = processes.iter().map(|p| p.pgrp).filter(|&g| g != own_group).collect();
        let prefix = format!("testkit-pg-{}-", demo.pid);
        let pg_dirs: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        let mut postgres = Vec::new();
        for dir in &pg_dirs {
            let postmaster = std::fs::read_to_string(dir.join("postmaster.pid"))
                .ok()
                .and_then(|p| p.lines().next()?.trim().parse::<u32>().ok());
            if let Some(p) = postmaster.and_then(Proc::read) {
                postgres.extend(descendants(p.pid));
                postgres.push(p);
            }
        }
        Snapshot {
            demo_pid: demo.pid,
            out: demo.out.clone(),
            processes,
            groups,
            pg_dirs,
            postgres,
            namespaces: named_after(netns_names(), demo.pid),
            links: named_after(link_names(), demo.pid),
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.processes.iter().filter(|p| p.cmdline.contains(needle)).count()
    }

    fn describe(&self) -> String {
        let procs: Vec<String> = self.processes.iter().map(ToString::to_string).collect();
        format!(
            "processes:\n  {}\npostgres: {:?}\nnamespaces: {:?}\nlinks: {:?}",
            procs.join("\n  "),
            self.postgres.iter().map(|p| p.pid).collect::<Vec<_>>(),
            self.namespaces,
            self.links
        )
    }
}

/// Everything in `before` is gone: processes (given `grace` to die), PostgreSQL, network,
/// `ports`, the demo's ledger.
fn assert_nothing_left(before: &Snapshot, ports: &[u16], grace: Duration, log: &str) {
    let pid = before.demo_pid;
    let out = before.out.to_string_lossy().into_owned();
    let leftovers = || -> Vec<String> {
        let mut left: Vec<String> = before
            .processes
            .iter()
            .chain(&before.postgres)
            .filter(|p| p.still_running())
            .map(|p| format!("started by the demo: {p}"))
            .collect();
        for p in all_processes() {
            if before.groups.contains(&p.pgrp) {
                left.push(format!("in the demo's process group: {p}"));
            } else if p.cmdline.contains(&out) {
                left.push(format!("naming the demo's --out: {p}"));
            } else if environ_has(p.pid, &format!("TK_PG_PARENT={pid}")) {
                left.push(format!("the demo's PostgreSQL watchdog: {p}"));
            }
        }
        left
    };
    wait_until(grace, || leftovers().is_empty());
    let left = leftovers();
    assert!(
        left.is_empty(),
        "the demo left processes running:\n  {}\nbefore the signal:\n{}\ndemo output:\n{log}",
        left.join("\n  "),
        before.describe()
    );

    for dir in &before.pg_dirs {
        assert!(
            !dir.exists(),
            "the throwaway PostgreSQL's data directory {} is still there\ndemo output:\n{log}",
            dir.display()
        );
    }
    // Also one made after the snapshot, and anything running in one (initdb, a postmaster).
    let pg_prefix = format!("testkit-pg-{pid}-");
    let pg_left: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&pg_prefix))
        .chain(
            all_processes()
                .into_iter()
                .filter(|p| p.cmdline.contains(&pg_prefix))
                .map(|p| p.to_string()),
        )
        .collect();
    assert!(pg_left.is_empty(), "the demo's PostgreSQL left {pg_left:?}\ndemo output:\n{log}");
    for port in ports {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok(),
            "port {port} of the demo is still taken\ndemo output:\n{log}"
        );
    }
    if is_root() {
        let (namespaces, links) = (named_after(netns_names(), pid), named_after(link_names(), pid));
        assert!(namespaces.is_empty() && links.is_empty(), "the demo left network namespaces {namespaces:?} and links {links:?}\ndemo output:\n{log}");
    }
    let ledger = before.out.join("work").join(demo::cleanup::LEDGER);
    assert!(
        !ledger.exists(),
        "{} is still there: the demo thinks something is left\ndemo output:\n{log}",
        ledger.display()
    );
}

/// The port in `http://127.0.0.1:PORT` in `line`.
fn port_in(line: &str) -> u16 {
    let rest =
        &line[line.find("http://127.0.0.1:").expect("a local URL") + "http://127.0.0.1:".len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn sigterm_while_serving_stops_every_process_and_removes_the_network() {
    let _one = one_at_a_time();
    let mut demo = Demo::start();
    demo.wait_for_line("Serving;", Duration::from_secs(300));
    let cloud = port_in(&demo.wait_for_line("access graph page:", Duration::ZERO));
    let mappers = [
        port_in(&demo.wait_for_line("us-east: intentmap --mapper-url", Duration::ZERO)),
        port_in(&demo.wait_for_line("eu-west: intentmap --mapper-url", Duration::ZERO)),
    ];
    let before = Snapshot::take(&demo);

    // What is about to be stopped is what the demo is made of (so the checks below check something).
    let log = demo.log();
    assert_eq!(before.count("cloud-api serve"), 1, "{}\n{log}", before.describe());
    assert_eq!(before.count("cluster-agent mapper"), 2, "{}\n{log}", before.describe());
    assert!(
        !before.postgres.is_empty() && before.pg_dirs.len() == 1,
        "the demo's own PostgreSQL runs: {}\n{log}",
        before.describe()
    );
    if is_root() {
        assert_eq!(before.count("cluster-agent node"), 2, "{}\n{log}", before.describe());
        assert_eq!(before.count("dnsmasq"), 1, "{}\n{log}", before.describe());
        assert_eq!(
            before.count("s.listen(64)"),
            7,
            "a Python server in each pod but the DNS one: {}\n{log}",
            before.describe()
        );
        assert_eq!(before.namespaces.len(), 8, "{}\n{log}", before.describe());
        assert_eq!(
            before.links.len(),
            9,
            "a bridge and a veth per pod: {}\n{log}",
            before.describe()
        );
    }

    demo.signal("TERM");
    let status = demo.wait_exit(Duration::from_secs(60));
    let log = demo.log();
    assert_eq!(status.code(), Some(0), "stopping on SIGTERM while serving is a normal end\n{log}");
    assert!(demo.printed("Stopped; nothing of the demo is left running.").is_some(), "{log}");
    assert_nothing_left(&before, &[cloud, mappers[0], mappers[1]], Duration::from_secs(10), &log);
}

#[test]
fn sigterm_during_the_setup_stops_what_was_started_so_far() {
    let _one = one_at_a_time();
    let mut demo = Demo::start();
    // In the middle: the lab is up (as root) and the first node agent is starting (loading its
    // eBPF programs), or (replaying) the first mapper is.
    demo.wait_for_descendant(
        if is_root() { "cluster-agent node" } else { "cluster-agent mapper" },
        Duration::from_secs(180),
    );
    let before = Snapshot::take(&demo);
    assert!(
        before.count("cloud-api serve") == 1 && !before.postgres.is_empty(),
        "{}\n{}",
        before.describe(),
        demo.log()
    );
    if is_root() {
        assert_eq!(before.namespaces.len(), 8, "{}\n{}", before.describe(), demo.log());
    }

    demo.signal("TERM");
    let status = demo.wait_exit(Duration::from_secs(60));
    let log = demo.log();
    assert!(demo.printed("Serving;").is_none(), "the signal came during the set-up\n{log}");
    assert_eq!(
        status.code(),
        Some(128 + 15),
        "a set-up cut short by SIGTERM exits with 128 + 15\n{log}"
    );
    assert!(demo.printed("SIGTERM during the set-up: stopping.").is_some(), "{log}");
    assert_nothing_left(&before, &[], Duration::from_secs(10), &log);
}

#[test]
fn sigint_and_sighup_early_in_the_setup_stop_everything() {
    let _one = one_at_a_time();
    for (signal, number) in [("INT", 2), ("HUP", 1)] {
        let mut demo = Demo::start();
        demo.wait_for_descendant("cloud-api serve", Duration::from_secs(120));
        let before = Snapshot::take(&demo);
        demo.signal(signal);
        let status = demo.wait_exit(Duration::from_secs(60));
        let log = demo.log();
        assert_eq!(status.code(), Some(128 + number), "SIG{signal}\n{log}");
        assert!(demo.printed(&format!("SIG{signal} during the set-up")).is_some(), "{log}");
        assert_nothing_left(&before, &[], Duration::from_secs(10), &log);
    }
}

#[test]
fn sigterm_while_postgresql_starts_leaves_no_postgres() {
    let _one = one_at_a_time();
    // initdb (and the single-user postgres it runs), then pg_ctl start: cut short at either.
    for delay in [Duration::from_millis(300), Duration::from_millis(900)] {
        let mut demo = Demo::start();
        demo.wait_for_line("Starting a throwaway PostgreSQL", Duration::from_secs(60));
        std::thread::sleep(delay);
        let before = Snapshot::take(&demo);
        demo.signal("TERM");
        let status = demo.wait_exit(Duration::from_secs(60));
        let log = demo.log();
        assert_eq!(status.code(), Some(128 + 15), "{log}");
        assert_nothing_left(&before, &[], Duration::from_secs(10), &log);
    }
}

#[test]
fn after_sigkill_the_processes_die_with_the_demo_and_clean_removes_the_rest() {
    let _one = one_at_a_time();
    let mut demo = Demo::start();
    demo.wait_for_descendant("cluster-agent mapper", Duration::from_secs(180));
    let before = Snapshot::take(&demo);
    let ledger = demo.out.join("work").join(demo::cleanup::LEDGER);
    assert!(ledger.exists(), "the demo records what it makes in {}", ledger.display());

    demo.signal("KILL");
    demo.wait_exit(Duration::from_secs(10));
    // SIGKILL can't be caught: the process group's anchor and the PostgreSQL watchdog notice the
    // demo is gone and stop everything; the network namespaces stay until the next start.
    let log = demo.log();
    let running = || {
        before
            .processes
            .iter()
            .chain(&before.postgres)
            .filter(|p| p.still_running())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    wait_until(Duration::from_secs(20), || {
        running().is_empty() && before.pg_dirs.iter().all(|d| !d.exists())
    });
    assert!(
        running().is_empty(),
        "still running after the demo was killed:\n  {}\n{log}",
        running().join("\n  ")
    );
    if is_root() {
        assert_eq!(
            named_after(netns_names(), before.demo_pid).len(),
            8,
            "the namespaces stay until the next start or --clean"
        );
    }
    assert!(ledger.exists(), "the ledger names what is left");

    let cleaned = demo.clean();
    let said = String::from_utf8_lossy(&cleaned.stdout);
    assert!(
        cleaned.status.success(),
        "--clean failed: {said}{}",
        String::from_utf8_lossy(&cleaned.stderr)
    );
    assert!(
        said.contains(&format!("Cleaned up after an earlier demo run (pid {})", before.demo_pid)),
        "{said}"
    );
    if is_root() {
        assert!(said.contains("removed 8 network namespaces and 9 links"), "{said}");
    }
    assert_nothing_left(&before, &[], Duration::from_secs(10), &log);
    let again = demo.clean();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("Nothing left"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}
