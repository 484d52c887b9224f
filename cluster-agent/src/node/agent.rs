//! `cluster-agent node`: capture on this node (eBPF, or the /proc + raw-socket fallback), name
//! the connecting pod where the node can tell, and ship observations to the mapper.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use clap::Args;
use model::observation::{PodHint, TcpConnection};
use model::Traffic;
use service_shell::metrics::Registry;
use service_shell::{ShipArgs, ShipProfile};

use super::attribution::{cgroup2_mount, PodIndex};
use super::capture::{CaptureConfig, DnsCapture};
use super::dns::parse_dns_packet;
use super::ebpf::EbpfCapture;
use super::events::{Event, TcpEvent, TcpEventKind, TcpSide};
use super::proc_scan;
use super::ship::{Observed, Outgoing};
use super::CaptureMode;

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    // How observations reach the mapper: --mapper-url, --shared-token, --token-file,
    // --ship-interval-seconds, --buffer.
    #[command(flatten)]
    pub ship: ShipArgs<NodeShip>,
    /// This node's name, sent with every batch.
    #[arg(long, env = "NODE_NAME", default_value = "node")]
    pub node_name: String,
    /// Health (`/healthz` says which capture mode runs) and metrics. On the host's network this
    /// must stay off the node's addresses: the loopback (the default), or the pod's own IP.
    #[arg(long, env = "NODE_LISTEN", default_value = "127.0.0.1:9091")]
    pub listen: SocketAddr,
    /// Do not load eBPF: scan /proc periodically and capture DNS on a raw socket.
    #[arg(long, env = "NO_EBPF")]
    pub no_ebpf: bool,
    /// The host's /proc (mounted into the pod).
    #[arg(long, env = "PROC_ROOT", default_value = "/proc")]
    pub proc_root: PathBuf,
    /// Seconds between /proc scans in fallback mode.
    #[arg(long, env = "SCAN_INTERVAL_SECONDS", default_value_t = 5.0)]
    pub scan_interval_seconds: f64,
    /// Load and attach the eBPF programs, say whether capture works on this node, and exit
    /// (status 0 if it does).
    #[arg(long)]
    pub check_ebpf: bool,
}

/// The node agent's words for the shipping flags and where they sit in `--help`: the first
/// three first, `--ship-interval-seconds` after `--scan-interval-seconds` and `--buffer` before
/// `--check-ebpf` (their places are taken by name among flags of the same display order).
#[derive(Debug, Clone)]
pub struct NodeShip;

impl ShipProfile for NodeShip {
    const MAPPER_URL_HELP: &'static str = "The mapper's local API";
    const SHARED_TOKEN_HELP: &'static str = "Not for production: a token shared with the mapper \
        (`cluster-agent mapper --shared-token`); without it the token file is sent";
    const TOKEN_FILE_HELP: Option<&'static str> = Some(
        "A projected ServiceAccount token made for the mapper's audience (the chart mounts one \
         here); re-read for every batch, as the kubelet rotates it",
    );
    const TOKEN_FILE: &'static str = "/var/run/secrets/intentmap/token";
    const BUFFER_HELP: &'static str = "Observations held while the mapper is unreachable; past \
        it the oldest are dropped and counted";
    const GLOBAL: bool = false;
    // The display orders of --scan-interval-seconds and --check-ebpf.
    const SHIP_INTERVAL_ORDER: Option<usize> = Some(9);
    const BUFFER_ORDER: Option<usize> = Some(10);
}

/// What the health endpoint and metrics show.
#[derive(Debug, Default)]
pub struct NodeStatus {
    /// `None` until the capture has started.
    pub mode: RwLock<Option<CaptureMode>>,
    pub fallback_reason: RwLock<Option<String>>,
    pub tcp_events: AtomicU64,
    pub tcp_closes: AtomicU64,
    pub dns_answers: AtomicU64,
    pub dns_malformed: AtomicU64,
    pub lost_events: AtomicU64,
}

fn at(t: std::time::SystemTime) -> DateTime<Utc> {
    t.into()
}

fn to_observation(event: &TcpEvent, pod: Option<PodHint>) -> TcpConnection {
    // A close is no new connection: it only brings the bytes (bounded as the wire format is).
    let (count, bytes) = match event.kind {
        TcpEventKind::Close { bytes, .. } => (0, Some(Traffic::default().saturating_add(bytes))),
        TcpEventKind::Connect | TcpEventKind::Accept => (1, None),
    };
    TcpConnection {
        src_ip: event.src.ip(),
        src_port: event.src.port(),
        dst_ip: event.dst.ip(),
        dst_port: event.dst.port(),
        at: at(event.at),
        count,
        pid: Some(event.pid),
        netns: Some(event.netns),
        pod,
        accepted: event.kind.side() == TcpSide::Accept,
        bytes,
    }
}

/// Both ends of a connection between two pods of this node report it; the first report wins,
/// except that the server's side still goes out after a connect that named no pod: the client
/// is then no pod of this node (a host process, or the test's stand-in for the internet), and
/// the accept is what tells the mapper about incoming traffic.
struct SeenConnections {
    window: Duration,
    /// When each connection was first reported, and whether that report can name its client.
    seen: HashMap<(SocketAddr, SocketAddr), (Instant, bool)>,
}

impl SeenConnections {
    fn first_sighting(&mut self, event: &TcpEvent, named: bool, now: Instant) -> bool {
        if self.seen.len() > 100_000 {
            self.seen.retain(|_, (t, _)| now.duration_since(*t) < self.window);
        }
        let accept = event.kind == TcpEventKind::Accept;
        match self.seen.get_mut(&(event.src, event.dst)) {
            Some(entry) if now.duration_since(entry.0) >= self.window => {
                *entry = (now, named || accept);
                true
            }
            Some((_, named_before)) if accept && !*named_before => {
                *named_before = true;
                true
            }
            Some(_) => false,
            None => {
                self.seen.insert((event.src, event.dst), (now, named || accept));
                true
            }
        }
    }
}

/// Open connections seen on this node and which of their ends were seen, so that a connection's
/// bytes are counted once: with the close of the connecting side when its connect was seen,
/// else with the accepting side's. As with [`SeenConnections`], when the connect named no pod
/// and the accept looks like incoming traffic (its source is no address of this node), both
/// closes go out and the mapper, which knows the addresses, takes one: a client it knows is
/// named by the connect's close and the accept's is dropped as the server's side of a call
/// between workloads; a client from outside has no workload for the connect's close, and the
/// accept's close goes to the incoming edge.
struct OpenConnections {
    ends: HashMap<(SocketAddr, SocketAddr), Ends>,
    /// Entries past which the oldest are forgotten (closes lost to a full ring buffer would
    /// otherwise keep theirs for ever); a close of a forgotten connection still goes out.
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Ends {
    opened: Instant,
    /// A connect was seen: whether it named the client's pod; and whether its socket closed.
    connect: Option<(bool, bool)>,
    /// An accept was seen: whether it is incoming traffic; and whether its socket closed.
    accept: Option<(bool, bool)>,
}

impl Ends {
    /// Whether the close of `side` reports the connection's bytes.
    fn carries(&self, side: TcpSide) -> bool {
        match (self.connect, self.accept, side) {
            // The mapper picks one (see above).
            (Some((false, _)), Some((true, _)), _) => true,
            (Some(_), _, side) => side == TcpSide::Connect,
            (None, _, side) => side == TcpSide::Accept,
        }
    }

    fn all_closed(&self) -> bool {
        self.connect.is_none_or(|(_, closed)| closed)
            && self.accept.is_none_or(|(_, closed)| closed)
    }
}

/// How long an entry is kept once the table is full (a connection open for longer than this is
/// forgotten first; its close then still goes out).
const OPEN_CONNECTION_AGE: Duration = Duration::from_secs(3600);

impl OpenConnections {
    fn new(max: usize) -> Self {
        OpenConnections { ends: HashMap::new(), max }
    }

    /// A connect (`flag`: it named a pod) or accept (`flag`: incoming traffic) was seen.
    fn opened(&mut self, event: &TcpEvent, flag: bool, now: Instant) {
        if self.ends.len() >= self.max {
            self.ends.retain(|_, e| now.duration_since(e.opened) < OPEN_CONNECTION_AGE);
            if self.ends.len() >= self.max {
                self.ends.clear();
            }
        }
        let side = event.kind.side();
        let ends = self.ends.entry((event.src, event.dst)).or_insert(Ends {
            opened: now,
            connect: None,
            accept: None,
        });
        match side {
            TcpSide::Connect => ends.connect = Some((flag, false)),
            TcpSide::Accept => ends.accept = Some((flag, false)),
        }
    }

    /// A socket of the connection closed: whether its line goes out.
    fn closed(&mut self, event: &TcpEvent) -> bool {
        let key = (event.src, event.dst);
        let Some(ends) = self.ends.get_mut(&key) else { return true };
        let side = event.kind.side();
        let carries = ends.carries(side);
        let end = match side {
            TcpSide::Connect => &mut ends.connect,
            TcpSide::Accept => &mut ends.accept,
        };
        match end {
            Some((_, closed)) => *closed = true,
            // This end was never seen opening (its event was lost): nothing to match it with.
            None => return carries,
        }
        if ends.all_closed() {
            self.ends.remove(&key);
        }
        carries
    }
}

async fn run_ebpf(
    mut capture: EbpfCapture,
    outgoing: Outgoing,
    pods: Arc<RwLock<PodIndex>>,
    status: Arc<NodeStatus>,
) {
    let mut seen = SeenConnections { window: Duration::from_secs(10), seen: HashMap::new() };
    let mut open = OpenConnections::new(MAX_OPEN_CONNECTIONS);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = capture.next() => match event {
                Ok(Event::Tcp(t)) => {
                    // A connection reset before accept() returns has no local port left to read.
                    if t.dst.port() == 0 {
                        continue;
                    }
                    // Only a connect runs in the client's process: its cgroup names the client's pod.
                    let (pod, from_host) = {
                        let pods = pods.read().expect("pod index poisoned");
                        match t.kind.side() {
                            TcpSide::Connect => (
                                pods.pod_for_cgroup_id(t.cgroup_id).or_else(|| pods.pod_for_netns(t.netns)),
                                false,
                            ),
                            TcpSide::Accept => (None, pods.is_host_address(t.src.ip())),
                        }
                    };
                    let now = Instant::now();
                    if matches!(t.kind, TcpEventKind::Close { .. }) {
                        if !open.closed(&t) {
                            continue;
                        }
                        status.tcp_closes.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let flag = match t.kind.side() {
                            TcpSide::Connect => pod.is_some(),
                            TcpSide::Accept => !from_host,
                        };
                        open.opened(&t, flag, now);
                        if !seen.first_sighting(&t, pod.is_some(), now) {
                            continue;
                        }
                        status.tcp_events.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut line = to_observation(&t, pod);
                    // From one of the node's own addresses (a CNI bridge's, masqueraded traffic):
                    // the node's, never the internet's.
                    line.accepted &= !from_host;
                    outgoing.push(Observed::Tcp(line));
                }
                Ok(Event::Dns(packet)) => match parse_dns_packet(&packet.bytes, packet.transport) {
                    Ok(answers) => {
                        for answer in answers {
                            status.dns_answers.fetch_add(1, Ordering::Relaxed);
                            outgoing.push(Observed::Dns(answer.into_observation(packet.client.ip(), at(packet.at))));
                        }
                    }
                    Err(e) => {
                        status.dns_malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(error = %e, truncated = packet.truncated, "skipped a DNS packet");
                    }
                },
                Err(e) => {
                    tracing::error!(error = %e, "reading the eBPF ring buffers failed; capture stops");
                    return;
                }
            },
            _ = tick.tick() => status.lost_events.store(capture.lost_events(), Ordering::Relaxed),
        }
    }
}

/// Open connections the eBPF capture keeps track of (about 200 bytes each): twice what the
/// kernel programs remember.
const MAX_OPEN_CONNECTIONS: usize = 131_072;

fn scan_once(proc_root: &std::path::Path, pods: &RwLock<PodIndex>) -> Vec<TcpConnection> {
    match proc_scan::scan(proc_root) {
        Ok(scan) => {
            let pods = pods.read().expect("pod index poisoned");
            let mut found =
                proc_scan::observations(&scan.connections, Utc::now(), |netns, _pid| {
                    pods.pod_for_netns(netns)
                });
            for line in found.iter_mut().filter(|l| l.accepted) {
                line.accepted = !pods.is_host_address(line.src_ip);
            }
            found
        }
        Err(e) => {
            tracing::warn!(error = %e, "scanning /proc for connections failed");
            Vec::new()
        }
    }
}

/// Fallback: periodic /proc scans (reporting connections not seen in the previous scan) and a
/// raw-socket DNS capture in a thread of its own.
fn run_fallback(
    args: &NodeArgs,
    outgoing: Outgoing,
    pods: Arc<RwLock<PodIndex>>,
    status: Arc<NodeStatus>,
    stop: Arc<AtomicBool>,
) {
    let capture_out = outgoing.clone();
    let capture_status = status.clone();
    let capture_stop = stop.clone();
    std::thread::spawn(move || match DnsCapture::open(&CaptureConfig::default()) {
        Ok(capture) => {
            let result = capture.run(&capture_stop, |answer| {
                capture_status.dns_answers.fetch_add(1, Ordering::Relaxed);
                capture_out.push(Observed::Dns(answer));
            });
            if let Err(e) = result {
                tracing::error!(error = %e, "the raw-socket DNS capture stopped");
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot open a raw socket for DNS capture (needs CAP_NET_RAW); DNS names will be missing")
        }
    });
    let proc_root = args.proc_root.clone();
    let every = Duration::from_secs_f64(args.scan_interval_seconds.max(0.1));
    tokio::spawn(async move {
        let mut previous: HashSet<(SocketAddr, SocketAddr, bool)> = HashSet::new();
        let mut tick = tokio::time::interval(every);
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let (root, index) = (proc_root.clone(), pods.clone());
            let Ok(found) = tokio::task::spawn_blocking(move || scan_once(&root, &index)).await
            else {
                continue;
            };
            // Keyed with the side too: a scan that caught only the server's side must not hide
            // the client's side from the next one (the mapper takes a call from its client's side).
            let key = |c: &TcpConnection| {
                (
                    SocketAddr::new(c.src_ip, c.src_port),
                    SocketAddr::new(c.dst_ip, c.dst_port),
                    c.accepted,
                )
            };
            let current: HashSet<_> = found.iter().map(key).collect();
            for c in found {
                if !previous.contains(&key(&c)) {
                    status.tcp_events.fetch_add(1, Ordering::Relaxed);
                    outgoing.push(Observed::Tcp(c));
                }
            }
            previous = current;
        }
    });
}

pub async fn run(args: NodeArgs) -> anyhow::Result<()> {
    if args.check_ebpf {
        let capture =
            EbpfCapture::load().map_err(|e| anyhow::anyhow!("the eBPF capture does not load on this node: {e}; the agent would fall back to /proc scans"))?;
        drop(capture);
        println!("the eBPF capture loads and attaches on this node");
        return Ok(());
    }
    let outgoing = Outgoing::new(args.ship.buffer);
    let status = Arc::new(NodeStatus::default());
    let cgroup_root = cgroup2_mount(&args.proc_root);
    let pods = Arc::new(RwLock::new(PodIndex::build(&args.proc_root, cgroup_root.as_deref())));
    {
        let (pods, proc_root) = (pods.clone(), args.proc_root.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                let (root, cg) = (proc_root.clone(), cgroup_root.clone());
                if let Ok(fresh) =
                    tokio::task::spawn_blocking(move || PodIndex::build(&root, cg.as_deref())).await
                {
                    *pods.write().expect("pod index poisoned") = fresh;
                }
            }
        });
    }

    // Connections that predate the agent are only visible in /proc.
    let existing = scan_once(&args.proc_root, &pods);
    tracing::info!(connections = existing.len(), "initial /proc scan");
    for c in existing {
        outgoing.push(Observed::Tcp(c));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ebpf = if args.no_ebpf {
        Err("eBPF disabled by --no-ebpf".to_owned())
    } else {
        EbpfCapture::load().map_err(|e| e.to_string())
    };
    match ebpf {
        Ok(capture) => {
            *status.mode.write().expect("status poisoned") = Some(CaptureMode::Ebpf);
            tracing::info!("capturing with eBPF");
            tokio::spawn(run_ebpf(capture, outgoing.clone(), pods.clone(), status.clone()));
        }
        Err(reason) => {
            *status.mode.write().expect("status poisoned") = Some(CaptureMode::Fallback);
            tracing::warn!(%reason, "eBPF capture unavailable: falling back to /proc scans and a raw-socket DNS capture");
            *status.fallback_reason.write().expect("status poisoned") = Some(reason);
            run_fallback(&args, outgoing.clone(), pods.clone(), status.clone(), stop.clone());
        }
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let health = health_router(status.clone(), outgoing.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, health).await {
            tracing::error!(error = %e, "the health endpoint stopped");
        }
    });

    let shipper = args.ship.shipper(args.node_name.clone())?;
    shipper.run(outgoing, args.ship.interval(), service_shell::shutdown_signal()).await;
    stop.store(true, Ordering::Relaxed);
    Ok(())
}

fn health_router(status: Arc<NodeStatus>, outgoing: Outgoing) -> Router {
    let health = {
        let (status, outgoing) = (status.clone(), outgoing.clone());
        move || async move {
            Json(serde_json::json!({
                "mode": status.mode.read().expect("status poisoned").map_or("", CaptureMode::as_str),
                "fallback_reason": *status.fallback_reason.read().expect("status poisoned"),
                "buffered": outgoing.len(),
            }))
        }
    };
    let mut registry = Registry::with_prefix("intentmap_node");
    registry.register_scrape(move |m| {
        let s = outgoing.stats.clone();
        let ebpf =
            u64::from(*status.mode.read().expect("status poisoned") == Some(CaptureMode::Ebpf));
        m.gauge("ebpf", "Whether capture runs on eBPF (1) or on the fallback (0)", ebpf);
        let counters = [
            ("tcp_events", "TCP connections captured", &status.tcp_events),
            ("tcp_closes", "TCP connection closes reported with their bytes", &status.tcp_closes),
            ("dns_answers", "DNS answers captured", &status.dns_answers),
            ("dns_malformed", "DNS packets that could not be read", &status.dns_malformed),
            ("lost_events", "Capture events lost to a full ring buffer", &status.lost_events),
            ("shipped", "Observations delivered to the mapper", &s.shipped),
            (
                "dropped",
                "Observations dropped because the buffer was full while the mapper was away",
                &s.dropped,
            ),
        ];
        for (name, help, value) in counters {
            m.counter(name, help, value.load(Ordering::Relaxed));
        }
        m.gauge("buffered", "Observations waiting to be shipped", outgoing.len() as u64);
    });
    let registry = Arc::new(registry);
    let metrics = move || std::future::ready(registry.response());
    Router::new().route("/healthz", get(health)).route("/metrics", get(metrics))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: TcpEventKind) -> TcpEvent {
        TcpEvent {
            kind,
            src: "10.244.1.5:40000".parse().unwrap(),
            dst: "10.244.1.9:8080".parse().unwrap(),
            pid: 1,
            comm: "client".into(),
            cgroup_id: 0,
            netns: 0,
            netns_cookie: 0,
            at: std::time::SystemTime::now(),
        }
    }

    #[test]
    fn both_ends_of_a_connection_on_one_node_are_reported_once() {
        let mut seen = SeenConnections { window: Duration::from_secs(10), seen: HashMap::new() };
        let t0 = Instant::now();
        // A pod's connect (its cgroup named it): the accept adds nothing.
        assert!(seen.first_sighting(&event(TcpEventKind::Connect), true, t0));
        assert!(!seen.first_sighting(&event(TcpEventKind::Accept), false, t0));
        assert!(!seen.first_sighting(&event(TcpEventKind::Connect), true, t0));
        // After the window it is a new connection again.
        assert!(seen.first_sighting(&event(TcpEventKind::Connect), false, t0 + seen.window));

        // A connect that named no pod: the server's accept still goes out, once.
        let mut seen = SeenConnections { window: Duration::from_secs(10), seen: HashMap::new() };
        assert!(seen.first_sighting(&event(TcpEventKind::Connect), false, t0));
        assert!(seen.first_sighting(&event(TcpEventKind::Accept), false, t0));
        assert!(!seen.first_sighting(&event(TcpEventKind::Accept), false, t0));
    }

    fn close(side: TcpSide) -> TcpEvent {
        let bytes = Traffic { sent: 10, received: 20 };
        event(TcpEventKind::Close { side, bytes })
    }

    #[test]
    fn a_connections_bytes_go_out_once() {
        let t0 = Instant::now();
        let (connect, accept) = (event(TcpEventKind::Connect), event(TcpEventKind::Accept));
        // Both ends on this node, the connect naming a pod: the connect's close carries the
        // bytes, whichever socket closes first.
        for connect_closes_first in [true, false] {
            let mut open = OpenConnections::new(100);
            open.opened(&connect, true, t0);
            open.opened(&accept, true, t0);
            if connect_closes_first {
                assert!(open.closed(&close(TcpSide::Connect)));
                assert!(!open.closed(&close(TcpSide::Accept)));
            } else {
                assert!(!open.closed(&close(TcpSide::Accept)));
                assert!(open.closed(&close(TcpSide::Connect)));
            }
            assert!(open.ends.is_empty(), "both ends closed: forgotten");
        }

        // Only the server's end here (the client on another node, or outside): its close.
        let mut open = OpenConnections::new(100);
        open.opened(&accept, true, t0);
        assert!(open.closed(&close(TcpSide::Accept)));

        // The connect named no pod and the accept looks like incoming traffic: both, for the
        // mapper to pick by the client's address; from one of the node's own addresses: the
        // connect's.
        let mut open = OpenConnections::new(100);
        open.opened(&connect, false, t0);
        open.opened(&accept, true, t0);
        assert!(open.closed(&close(TcpSide::Connect)));
        assert!(open.closed(&close(TcpSide::Accept)));
        let mut open = OpenConnections::new(100);
        open.opened(&connect, false, t0);
        open.opened(&accept, false, t0);
        assert!(open.closed(&close(TcpSide::Connect)));
        assert!(!open.closed(&close(TcpSide::Accept)));

        // A connection opened before the agent started: its close still goes out.
        let mut open = OpenConnections::new(100);
        assert!(open.closed(&close(TcpSide::Connect)));
    }

    #[test]
    fn open_connections_are_bounded() {
        let t0 = Instant::now();
        let mut open = OpenConnections::new(10);
        for port in 0..25u16 {
            let mut e = event(TcpEventKind::Connect);
            e.src.set_port(port);
            open.opened(&e, true, t0 + OPEN_CONNECTION_AGE * u32::from(port));
            assert!(open.ends.len() <= 10);
        }
    }

    #[test]
    fn a_close_line_counts_no_connection_and_carries_bounded_bytes() {
        let bytes = Traffic { sent: u64::MAX, received: 7 };
        let mut e = event(TcpEventKind::Close { side: TcpSide::Accept, bytes });
        e.src = "203.0.113.9:5000".parse().unwrap();
        let line = to_observation(&e, None);
        assert_eq!((line.count, line.accepted), (0, true));
        assert_eq!(line.bytes, Some(Traffic { sent: model::limits::MAX_CONNECTIONS, received: 7 }));
        let open = to_observation(&event(TcpEventKind::Connect), None);
        assert_eq!((open.count, open.accepted, open.bytes), (1, false, None));
    }
}
