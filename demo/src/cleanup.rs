//! Everything a demo run starts or makes, stopped and removed however the run ends.
//!
//! - Every process the run starts goes into one process group of its own, led by an *anchor*:
//!   a tiny shell that ignores SIGINT, SIGTERM and SIGHUP and waits for EOF on a pipe only this
//!   process holds. [`Tracker::stop_processes`] (on drop, or explicitly) sends SIGTERM to the
//!   group, then SIGKILL to whatever is left. If this process dies without that (SIGKILL,
//!   `abort`, `process::exit`), the pipe closes and the anchor kills the whole group itself.
//!   Programs run in a pod with `ip netns exec` are `exec`-ed by `ip`, so they are in the group
//!   too. The group is separate from ours, so a terminal's Ctrl-C reaches only the demo, which
//!   then stops everything in order.
//! - What the run makes is written, before it is made, to a ledger (`demo-run.json` in the
//!   work directory): this process, the group, every long-lived process (pid and start time),
//!   every network namespace and link. The ledger is removed once everything is gone. A ledger
//!   found at the next start (or by `intentmap-demo --clean`) names what a killed run left
//!   behind; [`clean_leftovers`] stops and removes exactly that (a process only if its pid
//!   *and* start time still match, so a reused pid is never hit).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// The ledger's file name in the work directory.
pub const LEDGER: &str = "demo-run.json";
/// How long the group gets to exit after SIGTERM before it gets SIGKILL.
const GRACE: Duration = Duration::from_secs(3);
/// How long SIGKILL-ed processes may take to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// A process, identified across pid reuse by its start time (clock ticks after boot).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
    /// What it is, for messages ("cloud-api", "dnsmasq in im123-7").
    pub what: String,
}

impl Proc {
    fn of(pid: u32, what: &str) -> Option<Proc> {
        Some(Proc { pid, start: stat(pid)?.start, what: what.to_owned() })
    }

    /// Still running (not a zombie), and still the same process.
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && s.running())
    }
}

/// What a run has made so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Ledger {
    /// The process that made it all.
    demo: Option<Proc>,
    /// The process group of everything it started (the anchor's pid).
    pgid: i32,
    /// The anchor first, then every long-lived process started.
    processes: Vec<Proc>,
    /// Network namespaces, in the order made.
    namespaces: Vec<String>,
    /// Links (bridges, host ends of veth pairs), in the order made; removed in reverse.
    links: Vec<String>,
}

/// The process group and the ledger of one run. Dropping it stops every process of the group
/// and removes every namespace and link in the ledger (and then the ledger).
pub struct Tracker {
    path: PathBuf,
    pgid: i32,
    anchor: Mutex<Option<(Child, ChildStdin)>>,
    ledger: Mutex<Ledger>,
}

impl Tracker {
    /// Cleans up what an earlier run with this work directory left (see [`clean_leftovers`]),
    /// then starts the process group and the ledger.
    pub fn start(work_dir: &Path) -> anyhow::Result<Tracker> {
        if let Some(cleaned) = clean_leftovers(work_dir)? {
            warn!("{cleaned}");
        }
        std::fs::create_dir_all(work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let mut anchor = Command::new("sh")
            .args(["-c", "trap '' INT TERM HUP; read -r line; kill -9 0", "intentmap-demo-group"])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the demo's process group (sh)")?;
        let stdin = anchor.stdin.take().context("the anchor's stdin")?;
        let pgid = anchor.id() as i32;
        let ledger = Ledger {
            demo: Proc::of(std::process::id(), "intentmap-demo"),
            pgid,
            processes: Proc::of(anchor.id(), "process group anchor").into_iter().collect(),
            ..Ledger::default()
        };
        let tracker = Tracker {
            path: work_dir.join(LEDGER),
            pgid,
            anchor: Mutex::new(Some((anchor, stdin))),
            ledger: Mutex::new(ledger),
        };
        tracker.write()?;
        info!(pgid, ledger = %tracker.path.display(), "demo process group started");
        Ok(tracker)
    }

    /// Puts `cmd` into the run's process group (for short-lived processes, not in the ledger).
    pub fn adopt<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.process_group(self.pgid)
    }

    /// Starts `cmd` in the run's process group and records it in the ledger.
    pub fn spawn(&self, cmd: &mut Command, what: &str) -> anyhow::Result<Child> {
        let child = self.adopt(cmd).spawn().with_context(|| format!("starting {what}: {cmd:?}"))?;
        if let Some(p) = Proc::of(child.id(), what) {
            self.record(|l| l.processes.push(p))?;
        }
        Ok(child)
    }

    /// Records a network namespace about to be made.
    pub fn note_namespace(&self, name: &str) -> anyhow::Result<()> {
        self.record(|l| l.namespaces.push(name.to_owned()))
    }

    /// Records a link (bridge, veth) about to be made.
    pub fn note_link(&self, name: &str) -> anyhow::Result<()> {
        self.record(|l| l.links.push(name.to_owned()))
    }

    fn record(&self, change: impl FnOnce(&mut Ledger)) -> anyhow::Result<()> {
        change(&mut self.ledger.lock().unwrap_or_else(PoisonError::into_inner));
        self.write()
    }

    fn write(&self) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(
            &*self.ledger.lock().unwrap_or_else(PoisonError::into_inner),
        )?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .with_context(|| format!("writing {}", self.path.display()))
    }

    /// Stops every process of the group: SIGTERM, up to 3 s to exit, then SIGKILL. Returns once
    /// they are gone (or after 5 more seconds, with a warning). Idempotent.
    pub fn stop_processes(&self) {
        let Some((mut anchor, stdin)) =
            self.anchor.lock().unwrap_or_else(PoisonError::into_inner).take()
        else {
            return;
        };
        let pgid = self.pgid;
        let others = || group_members(pgid).into_iter().filter(|&p| p as i32 != pgid).count();
        if others() > 0 {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
            wait_until(GRACE, || others() == 0);
        }
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        drop(stdin);
        let _ = anchor.wait();
        if !wait_until(KILL_WAIT, || group_members(pgid).is_empty()) {
            warn!(pgid, pids = ?group_members(pgid), "processes of the demo survived SIGKILL (stuck in the kernel?)");
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.stop_processes();
        let ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let alive: Vec<&Proc> = ledger.processes.iter().filter(|p| p.alive()).collect();
        let left = remove_network(&ledger);
        if alive.is_empty() && left.is_empty() {
            let _ = std::fs::remove_file(&self.path);
            return;
        }
        let out = self.path.parent().and_then(Path::parent).unwrap_or(Path::new("."));
        warn!(
            processes = ?alive.iter().map(|p| p.pid).collect::<Vec<_>>(),
            network = ?left,
            "the demo could not remove everything it made; as root, run: intentmap-demo --clean --out {}",
            out.display()
        );
    }
}

/// If `work_dir` holds the ledger of an earlier run, stops the processes and removes the
/// namespaces and links it names, removes the ledger, and says what it did in one line.
/// `None` if there was no ledger. Fails, changing nothing, if that run is still going, and
/// fails (keeping the ledger) if something could not be removed.
pub fn clean_leftovers(work_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = work_dir.join(LEDGER);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let Ok(ledger) = serde_json::from_slice::<Ledger>(&text) else {
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        return Ok(Some(format!(
            "Removed {}, an unreadable record of an earlier demo run.",
            path.display()
        )));
    };
    let run = ledger.demo.as_ref().map_or("an earlier demo run".to_owned(), |d| {
        format!("an earlier demo run (pid {})", d.pid)
    });
    if let Some(demo) = ledger.demo.as_ref().filter(|d| d.alive()) {
        let out = work_dir.parent().unwrap_or(work_dir).display();
        bail!("{run} is still running with {out}: stop it first (kill {}) or give this one another --out", demo.pid);
    }

    // The anchor still there means the group is still ours: kill all of it. Otherwise only the
    // recorded processes that are still the same processes.
    let alive: Vec<&Proc> = ledger.processes.iter().filter(|p| p.alive()).collect();
    if ledger.pgid > 1
        && ledger
            .processes
            .first()
            .is_some_and(|anchor| anchor.pid as i32 == ledger.pgid && anchor.alive())
    {
        let _ = killpg(Pid::from_raw(ledger.pgid), Signal::SIGKILL);
    }
    for p in &alive {
        let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
    }
    wait_until(KILL_WAIT, || alive.iter().all(|p| !p.alive()));
    let survivors: Vec<String> =
        alive.iter().filter(|p| p.alive()).map(|p| format!("{} (pid {})", p.what, p.pid)).collect();
    if !survivors.is_empty() {
        bail!(
            "{run} left processes that could not be stopped: {}; stop them (as root) and try again",
            survivors.join(", ")
        );
    }

    let (namespaces, links) =
        (existing(&ledger.namespaces, &netns_names()), existing(&ledger.links, &link_names()));
    let left = remove_network(&ledger);
    if !left.is_empty() {
        bail!(
            "{run} left network namespaces or links that could not be removed: {}; run `intentmap-demo --clean --out {}` as root",
            left.join(", "),
            work_dir.parent().unwrap_or(work_dir).display()
        );
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Some(format!(
        "Cleaned up after {run}, which was killed before it could: stopped {} processes, removed {} network namespaces and {} links.",
        alive.len(),
        namespaces,
        links
    )))
}

fn existing(names: &[String], present: &[String]) -> usize {
    names.iter().filter(|n| present.contains(n)).count()
}

/// Removes the ledger's links (in reverse order: veths before their bridge) and namespaces;
/// returns those still present afterwards. A namespace some live process is still in is left
/// alone (it is not ours: ours were stopped before this runs).
fn remove_network(ledger: &Ledger) -> Vec<String> {
    if ledger.namespaces.is_empty() && ledger.links.is_empty() {
        return Vec::new();
    }
    let links = link_names();
    for link in ledger.links.iter().rev().filter(|l| links.contains(l)) {
        ip(&["link", "del", link]);
    }
    let namespaces = netns_names();
    for ns in ledger.namespaces.iter().filter(|n| namespaces.contains(n)) {
        let in_use = Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .is_ok_and(|o| !o.stdout.trim_ascii().is_empty());
        if in_use {
            warn!(namespace = %ns, "a process is still in this network namespace; leaving it");
        } else {
            ip(&["netns", "del", ns]);
        }
    }
    let (links, namespaces) = (link_names(), netns_names());
    ledger
        .links
        .iter()
        .filter(|l| links.contains(l))
        .chain(ledger.namespaces.iter().filter(|n| namespaces.contains(n)))
        .cloned()
        .collect()
}

fn ip(args: &[&str]) {
    match Command::new("ip").args(args).stdin(Stdio::null()).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            warn!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim())
        }
        Err(e) => warn!("could not run ip {}: {e}", args.join(" ")),
    }
}

/// The machine's network namespace names (`ip netns list`).
pub fn netns_names() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).stderr(Stdio::null()).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

/// The machine's link names (`ip -o link show`; a veth's `@peer` cut off).
pub fn link_names() -> Vec<String> {
    let out = Command::new("ip").args(["-o", "link", "show"]).stderr(Stdio::null()).output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .collect()
    })
    .unwrap_or_default()
}

/// The fields of `/proc/<pid>/stat` used here.
struct Stat {
    state: char,
    pgrp: i32,
    start: u64,
}

impl Stat {
    fn running(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "<pid> (<comm>) <state> <ppid> <pgrp> ..."; comm may hold spaces and parentheses.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The running (not zombie) processes of process group `pgid`.
fn group_members(pgid: i32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid && s.running()))
        .collect()
}

/// Polls `done` every 50 ms for up to `timeout`; whether it became true.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work_dir() -> PathBuf {
        std::env::temp_dir().join(format!("demo-cleanup-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn stopping_kills_the_whole_group_and_removes_the_ledger() {
        let dir = work_dir();
        let tracker = Tracker::start(&dir).unwrap();
        let mut child =
            tracker.spawn(Command::new("sleep").arg("600").stdout(Stdio::null()), "sleep").unwrap();
        // A grandchild, not in the ledger: the group still holds it.
        let mut cmd = Command::new("sh");
        tracker.adopt(cmd.args(["-c", "sleep 600 & echo $!; wait"]).stdout(Stdio::piped()));
        let mut sh = cmd.spawn().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(sh.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let grandchild = Proc::of(line.trim().parse().unwrap(), "sleep").unwrap();
        let recorded = Proc::of(child.id(), "sleep").unwrap();
        assert!(dir.join(LEDGER).exists());
        assert!(recorded.alive() && grandchild.alive());

        drop(tracker);
        assert!(!recorded.alive(), "the recorded child was stopped");
        assert!(!grandchild.alive(), "the grandchild was stopped");
        assert!(!dir.join(LEDGER).exists(), "the ledger is removed after a clean stop");
        let _ = (child.wait(), sh.wait());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn leftovers_of_a_dead_run_are_stopped_only_if_they_are_still_the_same_process() {
        let dir = work_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let mut ours = Command::new("sleep").arg("600").spawn().unwrap();
        let mut other = Command::new("sleep").arg("600").spawn().unwrap();
        let ours_proc = Proc::of(ours.id(), "sleep").unwrap();
        // `other` has the recorded pid but not the recorded start time: a reused pid.
        let reused = Proc {
            start: Proc::of(other.id(), "x").unwrap().start + 1,
            ..Proc::of(other.id(), "sleep").unwrap()
        };
        let ledger = Ledger {
            demo: Some(Proc { pid: 1, start: 0, what: "gone".into() }),
            pgid: 0,
            processes: vec![reused, ours_proc.clone()],
            ..Ledger::default()
        };
        std::fs::write(dir.join(LEDGER), serde_json::to_vec(&ledger).unwrap()).unwrap();

        let said = clean_leftovers(&dir).unwrap().unwrap();
        assert!(said.contains("stopped 1 processes"), "{said}");
        assert!(!ours_proc.alive());
        assert!(other.try_wait().unwrap().is_none(), "a process with a reused pid is left alone");
        assert!(!dir.join(LEDGER).exists());
        assert_eq!(clean_leftovers(&dir).unwrap(), None);
        let _ = ours.wait();
        let _ = other.kill();
        let _ = other.wait();
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_running_demo_is_not_cleaned_up() {
        let dir = work_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let ledger =
            Ledger { demo: Proc::of(std::process::id(), "intentmap-demo"), ..Ledger::default() };
        std::fs::write(dir.join(LEDGER), serde_json::to_vec(&ledger).unwrap()).unwrap();
        let err = clean_leftovers(&dir).unwrap_err().to_string();
        assert!(err.contains("still running"), "{err}");
        assert!(dir.join(LEDGER).exists());
        std::fs::remove_dir_all(&dir).ok();
    }
}
