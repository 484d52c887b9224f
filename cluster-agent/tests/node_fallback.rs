//! The node agent's fallback path (no eBPF) against the real kernel: the `/proc` scan, the
//! `AF_PACKET` DNS capture and pod attribution, with pods played by network namespaces joined
//! by a veth pair, their processes in their own cgroups, and dnsmasq as the DNS server.
//!
//! Needs root, iproute2 and dnsmasq, as CI has. Each test builds and removes its own
//! namespaces, so they run in parallel.

use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster_agent::node::attribution::{cgroup2_mount, PodIndex};
use cluster_agent::node::capture::{CaptureConfig, CaptureStats, DnsCapture};
use cluster_agent::node::proc_scan::{self, Direction};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use model::observation::DnsAnswer;
use testkit::netns::{in_netns, netns_inode, NetnsPair};

const SERVER4: &str = "10.201.0.1";
const CLIENT4: &str = "10.201.0.2";
const SERVER6: &str = "fd00:201::1";
const CLIENT6: &str = "fd00:201::2";

// === Fixture ===

/// Two "pods": network namespaces `server` (10.201.0.1, fd00:201::1) and `client` (.2, ::2)
/// joined by a veth pair. Dropping it kills what it started and removes the namespaces and
/// cgroups, also when a test fails.
struct Pods {
    net: NetnsPair,
}

impl Pods {
    fn new(tag: &str) -> Pods {
        require_root_and_tools();
        let id = std::process::id();
        let (server, client) = (
            [format!("{SERVER4}/24"), format!("{SERVER6}/64")],
            [format!("{CLIENT4}/24"), format!("{CLIENT6}/64")],
        );
        Pods {
            net: NetnsPair::new(
                &format!("nf{id}{tag}s"),
                &format!("nf{id}{tag}c"),
                &[&server[0], &server[1]],
                &[&client[0], &client[1]],
            ),
        }
    }

    fn server(&self) -> &str {
        &self.net.a
    }

    fn client(&self) -> &str {
        &self.net.b
    }

    /// Starts `command` in namespace `ns`; the pid is the command's.
    fn spawn(&mut self, ns: &str, command: &[&str]) -> u32 {
        self.net.spawn(ns, command)
    }

    fn dnsmasq(&mut self, ns: &str, listen: &[&str]) {
        let mut args = vec![
            testkit::need::command("dnsmasq", "dnsmasq-base").display().to_string(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--bind-interfaces".into(),
            "--user=root".into(),
            "--local-ttl=60".into(),
            format!(
                "--pid-file={}",
                std::env::temp_dir().join(format!("{ns}-dnsmasq.pid")).display()
            ),
            "--address=/shop.test/10.201.0.9".into(),
            "--address=/shop.test/fd00:201::9".into(),
        ];
        args.extend(listen.iter().map(|a| format!("--listen-address={a}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(ns, &args);
    }

    /// Moves `pid` into a fresh cgroup laid out as the kubelet's cgroupfs driver does.
    fn put_in_pod_cgroup(&mut self, pid: u32, uid: &str) -> PathBuf {
        let root = cgroup2_mount(Path::new("/proc")).expect("a cgroup2 mount in /proc/mounts");
        let top = root.join(format!("kubepods-{}", self.client()));
        let pod = top.join("besteffort").join(format!("pod{uid}"));
        std::fs::create_dir_all(&pod)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", pod.display()));
        for dir in [pod.clone(), top.join("besteffort"), top] {
            self.net.remove_on_drop(dir);
        }
        std::fs::write(pod.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", pod.display()));
        pod
    }
}

fn require_root_and_tools() {
    testkit::need::root("network namespaces and raw sockets");
    testkit::need::command("dnsmasq", "dnsmasq-base");
    testkit::need::command("ip", "iproute2");
}

// === DNS helpers ===

/// Sends one query for `name` to `server`:53 from a fresh socket, and waits for the answer.
fn query_once(server: IpAddr, name: &str, rtype: RecordType, timeout: Duration) -> Option<Message> {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().unwrap();
    let socket = UdpSocket::bind(bind).unwrap();
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    socket.send_to(&query.to_vec().unwrap(), (server, 53)).ok()?;
    let mut buf = [0u8; 1500];
    let len = socket.recv(&mut buf).ok()?;
    Message::from_vec(&buf[..len]).ok()
}

/// Queries until dnsmasq (just started) answers.
fn wait_for_dns(server: IpAddr, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while query_once(server, name, RecordType::A, Duration::from_millis(100)).is_none() {
        assert!(Instant::now() < deadline, "dnsmasq did not answer on {server} within 5 s");
    }
}

/// A capture running in namespace `ns` until dropped.
struct RunningCapture {
    answers: mpsc::Receiver<DnsAnswer>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<CaptureStats>>,
}

impl RunningCapture {
    fn start(ns: &str) -> RunningCapture {
        let (tx, answers) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let config =
            CaptureConfig { poll_interval: Duration::from_millis(50), ..CaptureConfig::default() };
        let thread = in_netns(ns, move || {
            let capture = DnsCapture::open(&config).unwrap_or_else(|e| panic!("{e}"));
            let counters = capture.counters();
            ready_tx.send(()).unwrap();
            capture
                .run(&stop_flag, |answer| {
                    let _ = tx.send(answer);
                })
                .unwrap_or_else(|e| panic!("{e}"));
            counters.snapshot()
        });
        ready.recv_timeout(Duration::from_secs(5)).expect("the capture socket opened");
        RunningCapture { answers, stop, thread: Some(thread) }
    }

    fn wait_for(&self, what: &str, matches: impl Fn(&DnsAnswer) -> bool) -> DnsAnswer {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.answers.recv_timeout(left) {
                Ok(answer) if matches(&answer) => return answer,
                Ok(_) => {}
                Err(_) => panic!("no captured DNS answer {what} within 5 s"),
            }
        }
    }

    fn finish(mut self) -> (Vec<DnsAnswer>, CaptureStats) {
        self.stop.store(true, Ordering::Relaxed);
        let stats = self.thread.take().unwrap().join().expect("capture thread");
        (self.answers.try_iter().collect(), stats)
    }
}

impl Drop for RunningCapture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ip_of(s: &str) -> IpAddr {
    s.parse().unwrap()
}

// === Tests ===

#[test]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces and a raw socket")]
fn dns_answers_over_veth_are_captured_in_the_client_namespace() {
    let mut pods = Pods::new("d");
    let server = pods.server().to_owned();
    pods.dnsmasq(&server, &[SERVER4, SERVER6]);
    let capture = RunningCapture::start(pods.client());

    let client = in_netns(pods.client(), || {
        wait_for_dns(ip_of(SERVER4), "ready.shop.test.");
        let v4 = query_once(ip_of(SERVER4), "shop.test.", RecordType::A, Duration::from_secs(2))
            .expect("an A answer over IPv4");
        let v6 = query_once(ip_of(SERVER6), "shop.test.", RecordType::AAAA, Duration::from_secs(2))
            .expect("an AAAA answer over IPv6");
        (v4.answers.len(), v6.answers.len())
    });
    assert_eq!(client.join().unwrap(), (1, 1), "dnsmasq answers the client itself");

    let a = capture.wait_for("for shop.test A to 10.201.0.2", |a| {
        a.name == "shop.test" && a.client_ip == ip_of(CLIENT4)
    });
    assert_eq!(a.addresses, vec![ip_of("10.201.0.9")]);
    assert!(a.cnames.is_empty());
    assert_eq!(a.ttl_seconds, 60);
    let aaaa = capture.wait_for("for shop.test AAAA to fd00:201::2", |a| {
        a.name == "shop.test" && a.client_ip == ip_of(CLIENT6)
    });
    assert_eq!(aaaa.addresses, vec![ip_of("fd00:201::9")]);

    let (_, stats) = capture.finish();
    assert!(stats.dns_answers >= 3, "{stats:?}");
    assert_eq!(stats.malformed, 0, "{stats:?}");
}

#[test]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces and a raw socket")]
fn answers_on_loopback_are_reported_once() {
    let mut pods = Pods::new("l");
    let ns = pods.server().to_owned();
    pods.dnsmasq(&ns, &["127.0.0.1"]);
    in_netns(&ns, || wait_for_dns(ip_of("127.0.0.1"), "ready.shop.test.")).join().unwrap();

    let capture = RunningCapture::start(&ns);
    let answered = in_netns(&ns, || {
        query_once(ip_of("127.0.0.1"), "once.shop.test.", RecordType::A, Duration::from_secs(2))
            .is_some()
    });
    assert!(answered.join().unwrap(), "dnsmasq answered over lo");
    let first = capture.wait_for("for once.shop.test", |a| a.name == "once.shop.test");
    assert_eq!(
        (first.client_ip, first.addresses.clone()),
        (ip_of("127.0.0.1"), vec![ip_of("10.201.0.9")])
    );
    // Give the second copy time to arrive, had it not been dropped.
    std::thread::sleep(Duration::from_millis(200));

    let (later, stats) = capture.finish();
    let repeats = later.iter().filter(|a| a.name == "once.shop.test").count();
    assert_eq!(repeats, 0, "the answer was reported {} times", repeats + 1);
    assert_eq!(stats.frames_seen, 2, "lo shows the answer twice: {stats:?}");
    assert_eq!((stats.dns_answers, stats.duplicates_dropped), (1, 1), "{stats:?}");
}

#[test]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces and a raw socket")]
fn tcp_connections_between_namespaces_are_found_once_per_namespace() {
    const POD_UID: &str = "5d1c7a6e-2b3f-4c8d-9e0a-1b2c3d4e5f60";
    let mut pods = Pods::new("t");
    let (server_ns, client_ns) = (pods.server().to_owned(), pods.client().to_owned());
    // A process in each namespace, so the scan finds them; the client one is in a pod's cgroup.
    pods.spawn(&server_ns, &["sleep", "60"]);
    let client_pid = pods.spawn(&client_ns, &["sleep", "60"]);
    let pod_cgroup = pods.put_in_pod_cgroup(client_pid, POD_UID);

    let listeners = in_netns(&server_ns, || {
        let v4 = TcpListener::bind((ip_of(SERVER4), 0)).unwrap();
        let v6 = TcpListener::bind((ip_of(SERVER6), 0)).unwrap();
        (v4, v6)
    })
    .join()
    .unwrap();
    let targets = [listeners.0.local_addr().unwrap(), listeners.1.local_addr().unwrap()];
    let streams: Vec<TcpStream> = in_netns(&client_ns, move || {
        targets.iter().map(|t| TcpStream::connect(t).unwrap()).collect()
    })
    .join()
    .unwrap();
    let _accepted: Vec<TcpStream> =
        [&listeners.0, &listeners.1].iter().map(|l| l.accept().unwrap().0).collect();

    let started = Instant::now();
    let scan = proc_scan::scan(Path::new("/proc")).expect("scan /proc");
    let scan_time = started.elapsed();
    let client_netns = netns_inode(&client_ns);
    let server_netns = netns_inode(&server_ns);
    assert_eq!(proc_scan::netns_inode(Path::new("/proc"), client_pid).unwrap(), client_netns);

    for (stream, target) in streams.iter().zip(targets) {
        let local = stream.local_addr().unwrap();
        let seen: Vec<_> = scan
            .connections
            .iter()
            .filter(|c| {
                (c.local == local && c.remote == target) || (c.local == target && c.remote == local)
            })
            .collect();
        assert_eq!(seen.len(), 2, "{local} -> {target} is seen from both namespaces: {seen:?}");
        let out =
            seen.iter().find(|c| c.direction == Direction::Outbound).expect("the client's end");
        assert_eq!(
            (out.local, out.remote, out.netns, out.pid),
            (local, target, client_netns, client_pid)
        );
        let inbound =
            seen.iter().find(|c| c.direction == Direction::Inbound).expect("the server's end");
        assert_eq!((inbound.local, inbound.remote, inbound.netns), (target, local, server_netns));
    }

    let index = PodIndex::build(Path::new("/proc"), cgroup2_mount(Path::new("/proc")).as_deref());
    assert_eq!(index.pod_for_netns(client_netns).and_then(|p| p.uid).as_deref(), Some(POD_UID));
    assert_eq!(index.pod_for_netns(server_netns), None);
    assert_eq!(
        index
            .pod_for_cgroup_id(std::fs::metadata(&pod_cgroup).unwrap().ino())
            .and_then(|p| p.uid)
            .as_deref(),
        Some(POD_UID)
    );

    let observed = proc_scan::observations(&scan.connections, chrono::Utc::now(), |netns, _pid| {
        index.pod_for_netns(netns)
    });
    for (stream, target) in streams.iter().zip(targets) {
        let local = stream.local_addr().unwrap();
        let ours: Vec<_> = observed
            .iter()
            .filter(|o| {
                o.src_port == local.port() && o.dst_port == target.port() && o.dst_ip == target.ip()
            })
            .collect();
        assert_eq!(ours.len(), 1, "reported once, from the client: {ours:?}");
        assert_eq!(
            (ours[0].src_ip, ours[0].netns, ours[0].pid),
            (local.ip(), Some(client_netns), Some(client_pid))
        );
        assert_eq!(ours[0].pod.as_ref().and_then(|p| p.uid.as_deref()), Some(POD_UID));
    }
    eprintln!(
        "scanned {} namespaces, {} connections in {scan_time:?}",
        scan.namespaces,
        scan.connections.len()
    );
}
