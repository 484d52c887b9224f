//! The eBPF capture: loads the kernel programs built from `ebpf/` (see `build.rs`), attaches
//! them, and turns their ring buffers into [`Event`]s.
//!
//! - `tcp.bpf.o`: tracepoints `sock/inet_sock_set_state` (connects) and
//!   `syscalls/sys_exit_accept{,4}` (accepts), ring buffer `tcp_events`, lost counter `tcp_lost`.
//! - `dns.bpf.o`: `cgroup_skb/ingress` on the cgroup v2 root (answers from port 53 delivered to
//!   any socket), ring buffer `dns_events`, lost counter `dns_lost`.
//!
//! Everything is detached when the [`EbpfCapture`] is dropped. When loading fails the error
//! names the step, so the caller can log it and fall back to /proc scans and a raw socket.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};

use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, ProgramError, TracePoint};
use aya::{include_bytes_aligned, Ebpf};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::events::{BootClock, DnsPacket, Event, TcpEvent};

static TCP_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tcp.bpf.o"));
static DNS_OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dns.bpf.o"));

const TRACEFS: &str = "/sys/kernel/tracing";
/// Where the kernel mounts tracefs by itself, when debugfs is mounted at /sys/kernel/debug.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const TRACEPOINTS: &[(&str, &str, &str)] = &[
    ("tcp_state", "sock", "inet_sock_set_state"),
    ("tcp_accept4", "syscalls", "sys_exit_accept4"),
    ("tcp_accept", "syscalls", "sys_exit_accept"),
];
/// Records taken from one ring buffer before looking at the other, so neither starves.
const DRAIN_BATCH: usize = 256;
/// Lines of a verifier log kept in an error: the reason is at the end.
const VERIFIER_LOG_TAIL: usize = 40;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("the eBPF capture must be started inside a tokio runtime")]
    NoRuntime,
    #[error("no cgroup v2 hierarchy is mounted (no cgroup2 line in /proc/mounts), so DNS answers cannot be captured")]
    NoCgroup2,
    #[error("{step}: {detail}")]
    Step {
        step: String,
        detail: String,
        /// The errno behind the failure, where there is one; `None` when the verifier refused a
        /// program (the program is at fault, not the machine).
        errno: Option<i32>,
    },
}

impl EbpfError {
    fn step(step: impl Into<String>, error: &(dyn StdError + 'static)) -> Self {
        EbpfError::Step { step: step.into(), detail: describe(error), errno: errno_of(error) }
    }

    /// The machine cannot run our programs at all (no privileges, BPF or cgroup v2 missing)
    /// rather than something being wrong with them.
    pub fn is_unavailable(&self) -> bool {
        use nix::errno::Errno;
        match self {
            EbpfError::NoCgroup2 => true,
            EbpfError::NoRuntime => false,
            EbpfError::Step { errno, .. } => errno.is_some_and(|errno| {
                [Errno::EPERM, Errno::EACCES, Errno::ENOSYS, Errno::EOPNOTSUPP, Errno::ENOENT]
                    .contains(&Errno::from_raw(errno))
            }),
        }
    }
}

/// The whole chain of causes, with the tail of the verifier log where there is one.
fn describe(error: &(dyn StdError + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(ProgramError::LoadError { io_error, verifier_log }) =
            error.downcast_ref::<ProgramError>()
        {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(VERIFIER_LOG_TAIL)..].join("\n");
            parts.push(format!(
                "the kernel refused the program ({io_error}); verifier log ends:\n{tail}"
            ));
            break;
        }
        // First lines only: an outer error may repeat a whole verifier log from its source.
        let text = error.to_string().lines().next().unwrap_or_default().to_owned();
        if !parts.iter().any(|part: &String| part.contains(&text)) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

fn errno_of(error: &(dyn StdError + 'static)) -> Option<i32> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(ProgramError::LoadError { io_error, verifier_log }) =
            error.downcast_ref::<ProgramError>()
        {
            // With a log, the verifier refused the program: its fault, whatever the errno.
            return verifier_log
                .to_string()
                .trim()
                .is_empty()
                .then(|| io_error.raw_os_error())
                .flatten();
        }
        if let Some(errno) = error.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error) {
            return Some(errno);
        }
        next = error.source();
    }
    None
}

// === impl EbpfCapture ===

/// The loaded and attached programs and their ring buffers.
pub struct EbpfCapture {
    tcp_ring: AsyncFd<RingBuf<MapData>>,
    dns_ring: AsyncFd<RingBuf<MapData>>,
    tcp_lost: PerCpuArray<MapData, u64>,
    dns_lost: PerCpuArray<MapData, u64>,
    pending: VecDeque<Event>,
    clock: BootClock,
    malformed: u64,
    /// Own the programs and their links: dropping them detaches.
    _tcp: Ebpf,
    _dns: Ebpf,
}

impl EbpfCapture {
    /// Loads and attaches everything, with the DNS program on the first cgroup v2 mount in
    /// /proc/mounts. Must be called inside a tokio runtime.
    pub fn load() -> Result<Self, EbpfError> {
        let cgroup = cgroup2_mount().ok_or(EbpfError::NoCgroup2)?;
        Self::load_with_cgroup(&cgroup)
    }

    /// As [`EbpfCapture::load`], attaching the DNS program to `cgroup` (a cgroup v2 directory:
    /// answers to sockets of processes below it are captured).
    pub fn load_with_cgroup(cgroup: &Path) -> Result<Self, EbpfError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(EbpfError::NoRuntime);
        }
        let clock = BootClock::now().map_err(|e| EbpfError::step("reading CLOCK_BOOTTIME", &e))?;
        // aya looks for tracefs once per process, at the first attach: mount it before that.
        ensure_tracefs()?;

        let mut tcp =
            Ebpf::load(TCP_OBJECT).map_err(|e| EbpfError::step("loading tcp.bpf.o", &e))?;
        for (name, category, tracepoint) in TRACEPOINTS {
            let program: &mut TracePoint = tcp
                .program_mut(name)
                .ok_or_else(|| missing(format!("program {name} in tcp.bpf.o")))?
                .try_into()
                .map_err(|e| EbpfError::step(format!("program {name}"), &e))?;
            program.load().map_err(|e| EbpfError::step(format!("verifying {name}"), &e))?;
            program.attach(category, tracepoint).map_err(|e| {
                EbpfError::step(
                    format!("attaching {name} to tracepoint {category}/{tracepoint}"),
                    &e,
                )
            })?;
        }

        let mut dns =
            Ebpf::load(DNS_OBJECT).map_err(|e| EbpfError::step("loading dns.bpf.o", &e))?;
        let program: &mut CgroupSkb = dns
            .program_mut("dns_ingress")
            .ok_or_else(|| missing("program dns_ingress in dns.bpf.o".into()))?
            .try_into()
            .map_err(|e| EbpfError::step("program dns_ingress", &e))?;
        program.load().map_err(|e| EbpfError::step("verifying dns_ingress", &e))?;
        let cgroup_dir = std::fs::File::open(cgroup)
            .map_err(|e| EbpfError::step(format!("opening cgroup {}", cgroup.display()), &e))?;
        // aya attaches through a bpf_link (the ring buffer needs a newer kernel than links do),
        // which the kernel always adds alongside other programs on the cgroup (systemd's, a
        // CNI's) and which takes no mode flags: asking for AllowMultiple is EINVAL.
        program
            .attach(cgroup_dir, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
            .map_err(|e| {
                EbpfError::step(format!("attaching dns_ingress to cgroup {}", cgroup.display()), &e)
            })?;

        Ok(EbpfCapture {
            tcp_ring: ring(&mut tcp, "tcp_events")?,
            dns_ring: ring(&mut dns, "dns_events")?,
            tcp_lost: lost_counter(&mut tcp, "tcp_lost")?,
            dns_lost: lost_counter(&mut dns, "dns_lost")?,
            pending: VecDeque::new(),
            clock,
            malformed: 0,
            _tcp: tcp,
            _dns: dns,
        })
    }

    /// The next event, waiting for one. Cancel-safe: records already taken from the ring
    /// buffers wait in a queue for the next call.
    pub async fn next(&mut self) -> io::Result<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            self.drain();
            if !self.pending.is_empty() {
                continue;
            }
            // Readiness is cleared before the next drain, so a record committed after that
            // drain wakes us again.
            tokio::select! {
                guard = self.tcp_ring.readable_mut() => guard?.clear_ready(),
                guard = self.dns_ring.readable_mut() => guard?.clear_ready(),
            }
        }
    }

    fn drain(&mut self) {
        let clock = self.clock;
        let ring = self.tcp_ring.get_mut();
        for _ in 0..DRAIN_BATCH {
            let Some(record) = ring.next() else { break };
            match TcpEvent::parse(&record, &clock) {
                Ok(event) => self.pending.push_back(Event::Tcp(event)),
                Err(_) => self.malformed += 1,
            }
        }
        let ring = self.dns_ring.get_mut();
        for _ in 0..DRAIN_BATCH {
            let Some(record) = ring.next() else { break };
            match DnsPacket::parse(&record, &clock) {
                Ok(packet) => self.pending.push_back(Event::Dns(packet)),
                Err(_) => self.malformed += 1,
            }
        }
    }

    /// Events the kernel programs dropped because a ring buffer was full, since loading.
    pub fn lost_events(&self) -> u64 {
        self.lost_tcp_events() + self.lost_dns_events()
    }

    pub fn lost_tcp_events(&self) -> u64 {
        sum_per_cpu(&self.tcp_lost)
    }

    pub fn lost_dns_events(&self) -> u64 {
        sum_per_cpu(&self.dns_lost)
    }

    /// Records that did not parse (or TCP segments from port 53 without a message start).
    pub fn malformed_events(&self) -> u64 {
        self.malformed
    }
}

fn missing(what: String) -> EbpfError {
    EbpfError::Step {
        step: format!("looking up {what}"),
        detail: "not in the embedded object (build.rs out of step?)".into(),
        errno: None,
    }
}

fn ring(ebpf: &mut Ebpf, name: &str) -> Result<AsyncFd<RingBuf<MapData>>, EbpfError> {
    let map = ebpf.take_map(name).ok_or_else(|| missing(format!("map {name}")))?;
    let ring = RingBuf::try_from(map)
        .map_err(|e| EbpfError::step(format!("opening ring buffer {name}"), &e))?;
    register(ring).map_err(|e| EbpfError::step(format!("polling ring buffer {name}"), &e))
}

/// tokio made `AsyncFd`'s constructors `unsafe` (they cannot check that the fd stays open);
/// this is the one place the capture needs `unsafe`.
#[allow(unsafe_code)]
fn register(ring: RingBuf<MapData>) -> io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the ring buffer owns its map's fd (`MapData` holds an `OwnedFd`) and the
    // `AsyncFd` owns the ring buffer, so the fd stays open and the same for the `AsyncFd`'s
    // whole life; `RingBuf::as_raw_fd` always returns that fd.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(io::Error::from)
}

fn lost_counter(ebpf: &mut Ebpf, name: &str) -> Result<PerCpuArray<MapData, u64>, EbpfError> {
    let map = ebpf.take_map(name).ok_or_else(|| missing(format!("map {name}")))?;
    PerCpuArray::try_from(map).map_err(|e| EbpfError::step(format!("opening counter {name}"), &e))
}

fn sum_per_cpu(counter: &PerCpuArray<MapData, u64>) -> u64 {
    counter.get(&0, 0).map(|values| values.iter().sum()).unwrap_or(0)
}

/// Makes sure tracefs is reachable where aya looks (/sys/kernel/tracing, else
/// /sys/kernel/debug/tracing), mounting it at /sys/kernel/tracing if needed. Safe when another
/// process (an upgrade's old and new agent on one node, parallel tests) mounts it at the same
/// moment: the kernel refuses the second mount with EBUSY, and then the first one is there.
fn ensure_tracefs() -> Result<(), EbpfError> {
    if tracefs_present() {
        return Ok(());
    }
    let mounted = nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    // Whatever the mount said (done, EBUSY/EEXIST because a racing loader won, or a refusal
    // while debugfs offers it), look again; a mount that another process is finishing shows up
    // within moments.
    for _ in 0..TRACEFS_LOOKS {
        if tracefs_present() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let errno = mounted.err().unwrap_or(nix::errno::Errno::ENOENT);
    Err(EbpfError::step(
        format!("mounting tracefs at {TRACEFS} (needed to attach tracepoints; mount it by hand or give the agent CAP_SYS_ADMIN)"),
        &io::Error::from(errno),
    ))
}

/// Looks at /proc/self/mountinfo after a mount attempt before giving up on tracefs.
const TRACEFS_LOOKS: usize = 50;

/// Whether tracefs is mounted where aya looks, by /proc/self/mountinfo or (for the copy the kernel
/// mounts automatically under debugfs on first access) by the directory having entries, which is
/// also aya's own test.
fn tracefs_present() -> bool {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let wanted = [Path::new(TRACEFS), Path::new(DEBUGFS_TRACING)];
    if mountinfo_points(&mountinfo, "tracefs").any(|point| wanted.contains(&point.as_path())) {
        return true;
    }
    wanted
        .iter()
        .any(|dir| std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()))
}

/// Mount points of file systems of type `fs_type` in /proc/self/mountinfo text (fields: id,
/// parent, major:minor, root, mount point, options, optional fields, `-`, type, source, ...).
fn mountinfo_points<'a>(
    mountinfo: &'a str,
    fs_type: &'a str,
) -> impl Iterator<Item = PathBuf> + 'a {
    mountinfo.lines().filter_map(move |line| {
        let (before, after) = line.split_once(" - ")?;
        let point = before.split_whitespace().nth(4)?;
        (after.split_whitespace().next()? == fs_type)
            .then(|| PathBuf::from(super::attribution::unescape_mount_path(point)))
    })
}

/// The first cgroup v2 mount point, preferring /sys/fs/cgroup.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let points: Vec<PathBuf> = mount_points(&mounts, "cgroup2").collect();
    points.iter().find(|point| *point == Path::new("/sys/fs/cgroup")).or(points.first()).cloned()
}

/// Mount points of file systems of type `fs_type` in /proc/mounts text.
fn mount_points<'a>(mounts: &'a str, fs_type: &'a str) -> impl Iterator<Item = PathBuf> + 'a {
    mounts.lines().filter_map(move |line| {
        let mut fields = line.split_whitespace();
        let (_source, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
        (kind == fs_type).then(|| PathBuf::from(super::attribution::unescape_mount_path(point)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_and_tracefs_mounts() {
        let mounts = "sysfs /sys sysfs rw 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
                      none /mnt/my\\040cgroup cgroup2 rw 0 0\n\
                      tracefs /sys/kernel/tracing tracefs rw 0 0\n";
        let cgroups: Vec<PathBuf> = mount_points(mounts, "cgroup2").collect();
        assert_eq!(
            cgroups,
            [PathBuf::from("/sys/fs/cgroup/unified"), PathBuf::from("/mnt/my cgroup")]
        );
        assert_eq!(
            mount_points(mounts, "tracefs").collect::<Vec<_>>(),
            [PathBuf::from("/sys/kernel/tracing")]
        );
    }

    #[test]
    fn finds_tracefs_in_mountinfo() {
        let mountinfo = "22 1 0:21 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
                         31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                         90 22 0:12 / /sys/kernel/tracing rw,relatime shared:40 master:3 - tracefs tracefs rw\n\
                         91 22 0:13 / /mnt/with\\040space rw - tracefs nodev rw\n";
        let points: Vec<PathBuf> = mountinfo_points(mountinfo, "tracefs").collect();
        assert_eq!(
            points,
            [PathBuf::from("/sys/kernel/tracing"), PathBuf::from("/mnt/with space")]
        );
        assert_eq!(mountinfo_points(mountinfo, "cgroup2").count(), 0);
    }

    #[test]
    fn capture_can_move_into_a_task() {
        fn send<T: Send>() {}
        send::<EbpfCapture>();
    }

    #[test]
    fn errors_keep_the_errno() {
        let error = EbpfError::step("attaching", &io::Error::from_raw_os_error(nix::libc::EPERM));
        assert!(error.is_unavailable());
        assert!(error.to_string().starts_with("attaching: "), "{error}");
        let error = EbpfError::step("verifying", &io::Error::from_raw_os_error(nix::libc::E2BIG));
        assert!(!error.is_unavailable());
    }
}
