//! The eBPF capture on this machine's kernel, as root (as CI runs it): the programs pass the
//! verifier, and real TCP connections and DNS answers between network namespaces ("pods": a
//! veth pair, IPv4 and IPv6 addresses) arrive as events with the right 4-tuple, process,
//! cgroup and network namespace, and a closed connection's bytes arrive exactly, from both ends.
//! The tracepoints are global, so every assertion filters by the test's own addresses.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cluster_agent::node::ebpf::{cgroup2_mount, EbpfCapture};
use cluster_agent::node::events::{
    DnsPacket, DnsTransport, Event, TcpEvent, TcpEventKind, TcpSide,
};
use model::Traffic;
use testkit::netns::{in_netns_named, netns_inode, NetnsPair};

const WAIT: Duration = Duration::from_secs(5);

/// The capture, loaded and attached; as root (where these tests run) the programs must load.
fn load(test: &str) -> EbpfCapture {
    testkit::need::root("loading eBPF programs");
    let started = Instant::now();
    let capture = EbpfCapture::load()
        .unwrap_or_else(|e| panic!("the eBPF programs must load on this machine: {e}"));
    println!("{test}: loaded and attached in {:?}", started.elapsed());
    capture
}

// === network namespaces ===

/// Two network namespaces joined by a veth pair: `a` has x.1 and `b` x.2 in 10.200.<subnet>.0/24
/// and fd00:200:<subnet>::/64. Everything it made (namespaces, processes, cgroups) goes away on
/// drop, also when the test fails.
struct Lab {
    net: NetnsPair,
    subnet: u8,
}

impl Lab {
    fn new(tag: &str, subnet: u8) -> Lab {
        let pid = std::process::id();
        let addrs = |host: u8| {
            [format!("10.200.{subnet}.{host}/24"), format!("fd00:200:{subnet}::{host}/64")]
        };
        let (a, b) = (addrs(1), addrs(2));
        let net = NetnsPair::new(
            &format!("ebpf-{tag}-a-{pid}"),
            &format!("ebpf-{tag}-b-{pid}"),
            &[&a[0], &a[1]],
            &[&b[0], &b[1]],
        );
        Lab { net, subnet }
    }

    fn v4(&self, host: u8) -> IpAddr {
        format!("10.200.{}.{host}", self.subnet).parse().unwrap()
    }

    fn v6(&self, host: u8) -> IpAddr {
        format!("fd00:200:{}::{host}", self.subnet).parse().unwrap()
    }

    /// A fresh cgroup v2 group for a "pod's" processes, and its id.
    fn cgroup(&mut self, name: &str) -> (PathBuf, u64) {
        let dir = cgroup2_mount()
            .expect("a cgroup v2 mount")
            .join(format!("ebpf-test-{name}-{}", std::process::id()));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating cgroup {}: {e}", dir.display()));
        self.net.remove_on_drop(dir.clone());
        let id = std::fs::metadata(&dir).unwrap().ino();
        (dir, id)
    }
}

impl std::ops::Deref for Lab {
    type Target = NetnsPair;

    fn deref(&self) -> &NetnsPair {
        &self.net
    }
}

impl std::ops::DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut NetnsPair {
        &mut self.net
    }
}

/// The cgroup v2 id of this process.
fn own_cgroup_id() -> u64 {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = cgroups
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .expect("a cgroup v2 line in /proc/self/cgroup");
    std::fs::metadata(cgroup2_mount().unwrap().join(path.trim_start_matches('/'))).unwrap().ino()
}

/// Takes events until `done` holds for those kept by `keep`, or panics after [`WAIT`].
async fn collect(
    capture: &mut EbpfCapture,
    keep: impl Fn(&Event) -> bool,
    done: impl Fn(&[Event]) -> bool,
) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut kept = Vec::new();
    while !done(&kept) {
        match tokio::time::timeout_at(deadline, capture.next()).await {
            Ok(event) => {
                let event = event.expect("reading the ring buffers");
                if keep(&event) {
                    kept.push(event);
                }
            }
            Err(_) => panic!("timed out after {WAIT:?}; the test's events so far: {kept:#?}"),
        }
    }
    kept
}

// === tests ===

#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: eBPF and network namespaces")]
async fn programs_pass_the_verifier() {
    let capture = load("programs_pass_the_verifier");
    assert_eq!(capture.malformed_events(), 0);
    println!("lost so far: {}", capture.lost_events());
}

#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: eBPF and network namespaces")]
async fn tcp_connect_and_accept_between_namespaces_ipv4_and_ipv6() {
    let mut capture = load("tcp");
    let started = Instant::now();
    let mut lab = Lab::new("tcp", 1);
    let (client_cgroup, client_cgroup_id) = lab.cgroup("client");
    let (server_ns, client_ns) = (netns_inode(&lab.a), netns_inode(&lab.b));
    let server_cgroup_id = own_cgroup_id();

    let mut expected = Vec::new();
    for server_ip in [lab.v4(1), lab.v6(1)] {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let server = in_netns_named(&lab.a, "tcp-server", move || {
            let listener = TcpListener::bind((server_ip, 0)).unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let (mut stream, peer) = listener.accept().unwrap();
            let _ = stream.read(&mut [0; 1]);
            peer
        });
        let port = port_rx.recv().unwrap();
        // The client is its own process in its own cgroup and namespace, like a pod's: bash's
        // /dev/tcp connects, then the shell exits. ip netns exec execs, so the pid is kept.
        let script =
            format!("echo $$ > {}/cgroup.procs && exec ip netns exec {} bash -c 'exec 3<>/dev/tcp/{server_ip}/{port}'", client_cgroup.display(), lab.b);
        let client = Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).spawn().unwrap();
        let client_pid = client.id();
        lab.children.push(client);
        let peer = server.join().unwrap();
        expected.push((peer, SocketAddr::new(server_ip, port), client_pid));
    }
    let client_status = lab.children.iter_mut().map(|c| c.wait().unwrap()).collect::<Vec<_>>();
    assert!(client_status.iter().all(|s| s.success()), "a client failed: {client_status:?}");
    println!("connections made in {:?}", started.elapsed());

    let ours: Vec<(SocketAddr, SocketAddr)> =
        expected.iter().map(|(src, dst, _)| (*src, *dst)).collect();
    let events = collect(
        &mut capture,
        // Their closes follow (see tcp_close_reports_the_bytes_each_way): left to that test.
        |event| {
            matches!(event, Event::Tcp(e) if ours.contains(&(e.src, e.dst))
                && matches!(e.kind, TcpEventKind::Connect | TcpEventKind::Accept))
        },
        |events| events.len() >= 2 * ours.len(),
    )
    .await;
    println!("events received {:?} after start:", started.elapsed());
    for event in &events {
        println!("  {event:?}");
    }

    for (src, dst, client_pid) in &expected {
        let find = |kind| {
            events
                .iter()
                .find_map(|event| match event {
                    Event::Tcp(e) if e.kind == kind && e.src == *src && e.dst == *dst => {
                        Some(e.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no {kind:?} event for {src} -> {dst} in {events:#?}"))
        };
        let connect: TcpEvent = find(TcpEventKind::Connect);
        assert_eq!((connect.pid, connect.comm.as_str()), (*client_pid, "bash"), "{connect:?}");
        assert_eq!(
            (connect.netns, connect.cgroup_id),
            (client_ns, client_cgroup_id),
            "{connect:?}"
        );
        assert_ne!(connect.netns_cookie, 0);

        let accept = find(TcpEventKind::Accept);
        assert_eq!(
            (accept.pid, accept.comm.as_str()),
            (std::process::id(), "tcp-server"),
            "{accept:?}"
        );
        assert_eq!((accept.netns, accept.cgroup_id), (server_ns, server_cgroup_id), "{accept:?}");
        assert_ne!(accept.netns_cookie, connect.netns_cookie, "two namespaces, two cookies");
        let age = accept.at.elapsed().unwrap_or_default();
        assert!(age < Duration::from_secs(30), "event time {:?} is off by {age:?}", accept.at);
    }
    assert_eq!(capture.lost_tcp_events(), 0);
    println!("tcp test took {:?}", started.elapsed());
}

/// What the client sends and what the server answers in the close test: sizes no TCP default
/// (window, buffer, segment) divides, larger than a socket buffer.
const CLIENT_SENDS: usize = 1_234_567;
const SERVER_SENDS: usize = 7_654_321;

#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: eBPF and network namespaces")]
async fn tcp_close_reports_the_bytes_each_way_ipv4_and_ipv6() {
    let mut capture = load("bytes");
    let started = Instant::now();
    let lab = Lab::new("bytes", 3);
    let (server_ns, client_ns) = (netns_inode(&lab.a), netns_inode(&lab.b));

    let mut ours = Vec::new();
    for server_ip in [lab.v4(1), lab.v6(1)] {
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let server = in_netns_named(&lab.a, "bytes-server", move || {
            let listener = TcpListener::bind((server_ip, 0)).unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            let (mut stream, peer) = listener.accept().unwrap();
            let mut request = vec![0; CLIENT_SENDS];
            stream.read_exact(&mut request).unwrap();
            stream.write_all(&vec![7; SERVER_SENDS]).unwrap();
            // Until the client closes, then close too.
            let rest = stream.read_to_end(&mut Vec::new()).unwrap();
            assert_eq!(rest, 0, "the client sent more than it should");
            peer
        });
        let port = port_rx.recv().unwrap();
        let target = SocketAddr::new(server_ip, port);
        let client = in_netns_named(&lab.b, "bytes-client", move || {
            let mut stream = TcpStream::connect_timeout(&target, WAIT).unwrap();
            stream.write_all(&vec![1; CLIENT_SENDS]).unwrap();
            let mut answer = vec![0; SERVER_SENDS];
            stream.read_exact(&mut answer).unwrap();
            stream.local_addr().unwrap()
        });
        let local = client.join().unwrap();
        let peer = server.join().unwrap();
        assert_eq!(local, peer, "no NAT between the namespaces");
        ours.push((peer, target));
    }
    println!("transfers done in {:?}", started.elapsed());

    let close_of = |events: &[Event], src: SocketAddr, dst: SocketAddr, side: TcpSide| {
        events.iter().find_map(|event| match event {
            Event::Tcp(e)
                if (e.src, e.dst) == (src, dst)
                    && matches!(e.kind, TcpEventKind::Close { side: s, .. } if s == side) =>
            {
                Some(e.clone())
            }
            _ => None,
        })
    };
    let events = collect(
        &mut capture,
        |event| matches!(event, Event::Tcp(e) if ours.contains(&(e.src, e.dst))),
        |events| {
            ours.iter().all(|&(src, dst)| {
                [TcpSide::Connect, TcpSide::Accept]
                    .into_iter()
                    .all(|side| close_of(events, src, dst, side).is_some())
            })
        },
    )
    .await;
    for event in &events {
        println!("  {event:?}");
    }
    let expected = Traffic { sent: CLIENT_SENDS as u64, received: SERVER_SENDS as u64 };
    for &(src, dst) in &ours {
        for (side, netns) in [(TcpSide::Connect, client_ns), (TcpSide::Accept, server_ns)] {
            let close = close_of(&events, src, dst, side).unwrap();
            // Both ends count the same bytes, from the client's view.
            assert_eq!(close.kind, TcpEventKind::Close { side, bytes: expected }, "{close:?}");
            // The socket's own event again: its process and namespace.
            assert_eq!((close.pid, close.netns), (std::process::id(), netns), "{close:?}");
            let age = close.at.elapsed().unwrap_or_default();
            assert!(age < Duration::from_secs(30), "event time {:?} is off by {age:?}", close.at);
        }
    }
    assert_eq!(capture.lost_tcp_events(), 0);
    println!("bytes test took {:?}", started.elapsed());
}

/// A DNS query for `name` (type A) with id `id`.
fn dns_query(id: u16, name: &str) -> Vec<u8> {
    let mut query = Vec::new();
    query.extend_from_slice(&id.to_be_bytes());
    query.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // recursion desired, one question
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    query
}

/// Asks `server` over UDP until it answers (dnsmasq may still be starting); the client address.
fn ask_udp(server: SocketAddr, id: u16) -> SocketAddr {
    let bind: SocketAddr =
        if server.is_ipv4() { "0.0.0.0:0".parse().unwrap() } else { "[::]:0".parse().unwrap() };
    let socket = UdpSocket::bind(bind).unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        socket.send(&dns_query(id, "web.svc.test")).unwrap();
        let mut answer = [0; 512];
        if let Ok(n) = socket.recv(&mut answer) {
            assert!(
                n > 12 && answer[..2] == id.to_be_bytes(),
                "odd answer from {server}: {:?}",
                &answer[..n]
            );
            return socket.local_addr().unwrap();
        }
        assert!(Instant::now() < deadline, "no answer from dnsmasq at {server}");
    }
}

fn ask_tcp(server: SocketAddr, id: u16) -> SocketAddr {
    let mut stream = TcpStream::connect_timeout(&server, WAIT).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let query = dns_query(id, "web.svc.test");
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).unwrap();
    let mut len = [0; 2];
    stream.read_exact(&mut len).unwrap();
    let mut answer = vec![0; u16::from_be_bytes(len).into()];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer[..2], id.to_be_bytes());
    stream.local_addr().unwrap()
}

#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: eBPF and network namespaces")]
async fn dns_answers_from_dnsmasq_in_another_namespace() {
    let mut capture = load("dns");
    let started = Instant::now();
    let mut lab = Lab::new("dns", 2);
    let (server_v4, server_v6) = (lab.v4(1), lab.v6(1));
    let dnsmasq = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.a,
            "/usr/sbin/dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=53",
            "--bind-interfaces",
        ])
        .arg(format!("--listen-address={server_v4}"))
        .arg(format!("--listen-address={server_v6}"))
        .args([
            "--address=/svc.test/10.200.2.9",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--log-facility=-",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting dnsmasq (apt-get install dnsmasq-base)");
    lab.children.push(dnsmasq);

    let queries = [
        (SocketAddr::new(server_v4, 53), DnsTransport::Udp, 0x4401),
        (SocketAddr::new(server_v6, 53), DnsTransport::Udp, 0x6601),
        (SocketAddr::new(server_v4, 53), DnsTransport::Tcp, 0x4402),
    ];
    let client = in_netns_named(&lab.b, "dns-client", move || {
        queries
            .iter()
            .map(|&(server, transport, id)| {
                let client = match transport {
                    DnsTransport::Udp => ask_udp(server, id),
                    DnsTransport::Tcp => ask_tcp(server, id),
                };
                (server, transport, id, client)
            })
            .collect::<Vec<_>>()
    });
    let asked = client.join().unwrap();
    println!("queries answered in {:?}", started.elapsed());

    let (client_ns, cgroup_id) = (netns_inode(&lab.b), own_cgroup_id());
    let answer = |events: &[Event], id: u16, client: SocketAddr| {
        events.iter().find_map(|event| match event {
            Event::Dns(p)
                if p.client == client && p.bytes.get(..2) == Some(&id.to_be_bytes()[..]) =>
            {
                Some(p.clone())
            }
            _ => None,
        })
    };
    let events = collect(
        &mut capture,
        |event| matches!(event, Event::Dns(p) if p.server.ip() == server_v4 || p.server.ip() == server_v6),
        |events| asked.iter().all(|&(_, _, id, client)| answer(events, id, client).is_some()),
    )
    .await;
    println!("answers captured {:?} after start:", started.elapsed());
    for event in &events {
        println!("  {event:?}");
    }

    for &(server, transport, id, client) in &asked {
        let packet: DnsPacket = answer(&events, id, client).unwrap();
        assert_eq!((packet.server, packet.transport), (server, transport), "{packet:?}");
        assert!(
            packet.bytes.windows(4).any(|w| w == [10, 200, 2, 9]),
            "the answer's A record is not in {packet:?}"
        );
        assert!(!packet.truncated);
        assert_eq!((packet.netns, packet.cgroup_id), (client_ns, cgroup_id), "{packet:?}");
        assert_ne!(packet.netns_cookie, 0);
    }
    assert_eq!(capture.lost_dns_events(), 0);
    println!("dns test took {:?}", started.elapsed());
}

/// Two agents can start at once on one node (an upgrade's old and new pod), each mounting
/// tracefs if it finds it missing. In a mount namespace of its own where tracefs is not mounted
/// (as on a fresh machine), eight `cluster-agent node --check-ebpf` start at the same moment:
/// every one loads and attaches, and tracefs ends up mounted once.
#[test]
#[cfg_attr(unprivileged, ignore = "needs root: mount namespaces and eBPF")]
fn loaders_racing_to_mount_tracefs_all_load() {
    testkit::need::root("mount namespaces and eBPF");
    testkit::need::command("unshare", "util-linux");
    const LOADERS: usize = 8;
    const ROUNDS: usize = 4;
    // A few rounds, as the race is a matter of microseconds: each round unmounts tracefs (and
    // debugfs, which would offer its own copy), releases the loaders together and counts.
    let script = format!(
        r#"set -u
for round in $(seq {ROUNDS}); do
  for point in /sys/kernel/debug/tracing /sys/kernel/tracing /sys/kernel/debug; do
    while mountpoint -q "$point"; do umount -l "$point" || exit 90; done
  done
  if grep -q ' - tracefs ' /proc/self/mountinfo; then echo "tracefs is still mounted"; exit 91; fi
  # Every loader waits at a FIFO; opening it for writing releases them all at the same moment.
  rm -f "$1/go"; mkfifo "$1/go"
  pids=""
  for i in $(seq {LOADERS}); do (read _ < "$1/go"; exec "$0" node --check-ebpf) > "$1/loader-$round-$i.log" 2>&1 & pids="$pids $!"; done
  sleep 0.3
  : > "$1/go"
  failed=0
  for pid in $pids; do wait "$pid" || failed=$((failed + 1)); done
  echo "round $round: failed=$failed tracefs_mounts=$(grep -c ' /sys/kernel/tracing .* - tracefs ' /proc/self/mountinfo)"
done"#
    );
    let dir = std::env::temp_dir().join(format!("ebpf-tracefs-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            env!("CARGO_BIN_EXE_cluster-agent"),
        ])
        .arg(&dir)
        .env("RUST_LOG", "warn")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running unshare (util-linux)");
    let logs: Vec<String> = (1..=ROUNDS)
        .flat_map(|round| (1..=LOADERS).map(move |i| (round, i)))
        .map(|(round, i)| {
            std::fs::read_to_string(dir.join(format!("loader-{round}-{i}.log"))).unwrap_or_default()
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the mount namespace script failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for round in 1..=ROUNDS {
        assert!(
            stdout.contains(&format!("round {round}: failed=0 tracefs_mounts=1\n")),
            "every loader loads and tracefs is mounted once: {stdout}\n{logs:#?}"
        );
    }
    for log in &logs {
        assert!(log.contains("the eBPF capture loads and attaches on this node"), "{logs:#?}");
    }
}
