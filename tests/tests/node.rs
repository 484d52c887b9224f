//! The node agent on a node whose "pods" are network namespaces on a bridge, as a CNI makes
//! them: real TCP connections and real DNS answers (dnsmasq) between them, captured by the real
//! `cluster-agent node` binary (eBPF, then the /proc + raw-socket fallback), shipped to the real
//! `cluster-agent mapper`, which names them from a stand-in Kubernetes API. Needs root, as CI has.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mapper_core::fixtures::*;
use testkit::kube_api::FakeApiServer;
use testkit::netns::Bridge;
use tests::{binary, free_port, spawn, start_mapper, wait_ready, write_kubeconfig, Running};

/// Two pod namespaces on a bridge: `a` (10.210.x.2, the client) and `b` (10.210.x.3, the server
/// and a DNS server). Removed on drop.
struct Node {
    subnet: u8,
    pods: [String; 2],
    _bridge: Bridge,
}

impl Node {
    fn new(subnet: u8) -> Self {
        let mut bridge = Bridge::new(&format!("e2n{subnet}")).expect("setting up the test node");
        let pods = [2, 3].map(|host| {
            bridge.add_pod(&format!("10.210.{subnet}.{host}/24")).expect("adding a test pod")
        });
        Node { subnet, pods, _bridge: bridge }
    }

    fn ip(&self, pod: char) -> String {
        format!("10.210.{}.{}", self.subnet, if pod == 'a' { 2 } else { 3 })
    }

    fn exec(&self, pod: char, program: &str, args: &[&str]) -> Running {
        let ns = &self.pods[usize::from(pod != 'a')];
        spawn(
            Command::new("ip").args(["netns", "exec", ns, program]).args(args).stdin(Stdio::null()),
        )
    }
}

const PY_SERVER: &str = "import socket,sys,time\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 8080)); s.listen()\nc=[]\nwhile True: c.append(s.accept())";
/// Connects to argv[1]:8080 and holds the connection; retries for 20 s while the server (a
/// Python starting in another namespace, slow on a loaded machine) is not listening yet.
const PY_CLIENT: &str = "import socket,sys,time\nfor _ in range(200):\n  try:\n    s=socket.create_connection((sys.argv[1], 8080)); break\n  except OSError:\n    time.sleep(0.1)\ntime.sleep(60)";
/// One DNS query (A, recursion desired) for argv[2] to the server argv[1], repeated a few times.
const PY_DNS: &str = "import socket,struct,sys,time\nq=struct.pack('>HHHHHH',0x1234,0x0100,1,0,0,0)+b''.join(bytes([len(l)])+l.encode() for l in sys.argv[2].split('.'))+b'\\x00'+struct.pack('>HH',1,1)\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\nfor _ in range(3):\n  s.sendto(q,(sys.argv[1],53)); s.recv(512); time.sleep(0.5)";

/// A transfer of known size on port 8081: the client (argv: server, bytes to send, bytes to
/// read) sends, reads the whole answer and closes; the server (argv: address, bytes to read,
/// bytes to answer) answers each connection once it has read the request, then closes when the
/// client has.
const PY_TRANSFER_SERVER: &str = r#"import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 8081)); s.listen()
while True:
  c,_=s.accept(); n=int(sys.argv[2])
  while n>0:
    d=c.recv(min(n,65536))
    if not d: break
    n-=len(d)
  c.sendall(b'x'*int(sys.argv[3]))
  while c.recv(65536): pass
  c.close()"#;
const PY_TRANSFER_CLIENT: &str = r#"import socket,sys
s=socket.create_connection((sys.argv[1], 8081)); s.sendall(b'y'*int(sys.argv[2])); n=int(sys.argv[3])
while n>0:
  d=s.recv(min(n,65536))
  if not d: sys.exit('the server closed early')
  n-=len(d)
s.close()"#;
/// The transfer's sizes, from the client's view: what it sends and what it receives.
const SENDS: u64 = 300_000;
const RECEIVES: u64 = 2_000_000;

/// The `bytes` of the mapper's edge from `client` to a target whose JSON mentions `target`
/// (`/v1/edges`), once `done` holds for it or `timeout` has passed (then as it is: `Null` when
/// the edge has none).
async fn edge_bytes(
    mapper: &str,
    client: &str,
    target: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let edges: serde_json::Value =
            reqwest::get(format!("{mapper}/v1/edges")).await.unwrap().json().await.unwrap();
        let bytes = edges
            .as_array()
            .expect("/v1/edges lists edges")
            .iter()
            .find(|e| e["client"]["name"] == client && e["target"].to_string().contains(target))
            .map(|e| e["bytes"].clone())
            .unwrap_or_default();
        if done(&bytes) || Instant::now() >= deadline {
            return bytes;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs the transfer client in `ns` against `server` (port 8081) to its end.
fn transfer(ns: &str, server: &str) {
    let status = Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", PY_TRANSFER_CLIENT, server])
        .args([SENDS.to_string(), RECEIVES.to_string()])
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "the transfer client failed: {status}");
}

/// What `intentmap list` prints once it prints `expected`, or when `timeout` has passed.
async fn listed_when(mapper: &str, expected: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = Command::new(binary("intentmap"))
            .args(["--mapper-url", mapper, "list"])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        if listed == expected || Instant::now() >= deadline {
            return listed;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn scenario(no_ebpf: bool, subnet: u8) {
    testkit::need::root("network namespaces and traffic capture");
    let node = Node::new(subnet);
    let (a, b) = (node.ip('a'), node.ip('b'));

    let api = FakeApiServer::start().await.unwrap();
    api.apply(&Namespace { metadata: mk_namespace("shop"), ..Default::default() });
    api.apply::<Pod>(&mk_pod("shop", "frontend-0", &[&a]));
    api.apply::<Pod>(&mk_pod("shop", "cart-0", &[&b]));
    api.apply::<Pod>(
        &mk_pod("shop", "ledger-0", &[&format!("10.210.{subnet}.77")]).labelled("app", "ledger"),
    );
    api.apply::<Service>(&mk_service(
        "shop",
        "ledger",
        &[&format!("10.96.{subnet}.77")],
        &[("app", "ledger")],
    ));

    let dir = std::env::temp_dir().join(format!("e2e-node-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_mapper, mapper) = start_mapper(&dir, &write_kubeconfig(&dir, &api.url())).await;

    let health_port = free_port();
    let mut agent = Command::new(binary("cluster-agent"));
    agent
        .args([
            "node",
            "--mapper-url",
            &mapper,
            "--shared-token",
            "node-secret",
            "--node-name",
            "test-node",
            "--ship-interval-seconds",
            "0.2",
            "--scan-interval-seconds",
            "0.5",
        ])
        .args(["--listen", &format!("127.0.0.1:{health_port}")])
        .env("RUST_LOG", "warn");
    if no_ebpf {
        agent.arg("--no-ebpf");
    }
    let _agent = spawn(&mut agent);
    wait_ready(&format!("http://127.0.0.1:{health_port}/healthz"), Duration::from_secs(30)).await;
    let health: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{health_port}/healthz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["mode"], if no_ebpf { "fallback" } else { "ebpf" }, "{health}");
    if no_ebpf {
        assert!(
            health["fallback_reason"].as_str().unwrap().contains("--no-ebpf"),
            "the health endpoint says why: {health}"
        );
    }

    // Traffic: a long-lived TCP connection a → b, and a DNS answer from dnsmasq in b for a
    // Service name, delivered to a.
    let _dns = node.exec(
        'b',
        "dnsmasq",
        &[
            "--no-daemon",
            "--port=53",
            &format!("--listen-address={b}"),
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            &format!("--address=/ledger.shop.svc.cluster.local/10.96.{subnet}.77"),
        ],
    );
    let _server = node.exec('b', "python3", &["-c", PY_SERVER, &b]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _client = node.exec('a', "python3", &["-c", PY_CLIENT, &b]);
    let _query = node.exec('a', "python3", &["-c", PY_DNS, &b, "ledger.shop.svc.cluster.local"]);

    let expected = "frontend-0 in namespace shop calls:\n  - cart-0\n  - ledger-0\n";
    let listed = listed_when(&mapper, expected, Duration::from_secs(20)).await;
    assert_eq!(
        listed,
        expected,
        "the TCP connection names cart-0 and the DNS answer for the ledger Service names its pod ({} mode)",
        if no_ebpf { "fallback" } else { "eBPF" }
    );
    let node_metrics = || async {
        reqwest::get(format!("http://127.0.0.1:{health_port}/metrics"))
            .await
            .expect("the node agent's /metrics")
            .text()
            .await
            .expect("its body")
    };
    let metrics = node_metrics().await;
    assert!(metrics.contains("intentmap_node_lost_events_total 0"), "{metrics}");

    // A transfer of known size from a to b, closed: eBPF counts its bytes on the edge (exactly:
    // the long-lived connection above is still open); the /proc fallback measures none.
    let _transfer_server = node.exec(
        'b',
        "python3",
        &["-c", PY_TRANSFER_SERVER, &b, &SENDS.to_string(), &RECEIVES.to_string()],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    transfer(&node.pods[0], &b);
    let expected_bytes = serde_json::json!({"sent": SENDS, "received": RECEIVES});
    if no_ebpf {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let bytes = edge_bytes(&mapper, "frontend-0", "cart-0", Duration::ZERO, |_| true).await;
        assert!(bytes.is_null(), "the fallback measures no bytes (absent, not 0): {bytes}");
    } else {
        let bytes = edge_bytes(&mapper, "frontend-0", "cart-0", Duration::from_secs(20), |b| {
            *b == expected_bytes
        })
        .await;
        assert_eq!(bytes, expected_bytes, "the closed transfer's bytes, from the client's view");
        // `intentmap visualize` draws the link wider and tells the volume.
        let svg = dir.join("graph.svg");
        let out = Command::new(binary("intentmap"))
            .args(["--mapper-url", &mapper, "visualize", "-o"])
            .arg(&svg)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let svg = std::fs::read_to_string(&svg).unwrap();
        assert!(svg.contains("<title>293 KiB ↑ / 1.9 MiB ↓</title>"), "{svg}");
        let metrics = node_metrics().await;
        assert!(metrics.contains("intentmap_node_tcp_closes_total"), "{metrics}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Behind NAT the mapper cannot name a client by its address; the node names it by its cgroup.
/// The client's address here is unknown to the cluster, and only the pod UID in the
/// kubepods-style cgroup of its process names it.
#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces and eBPF")]
async fn ebpf_capture_names_the_client_by_its_pod_cgroup_when_its_address_is_unknown() {
    testkit::need::root("network namespaces and eBPF");
    const UID: &str = "0f4c2a9e-5b7d-4c1e-9a3b-2d6e8f1a7c55";
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    let cgroup_root = mounts
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.get(2) == Some(&"cgroup2"))
        .map(|fields| fields[1].to_owned())
        .unwrap_or_default();
    assert!(!cgroup_root.is_empty(), "a cgroup2 mount");
    let pod_cgroup = format!("{cgroup_root}/kubepods-e2e/pod{UID}");
    std::fs::create_dir_all(&pod_cgroup).unwrap();
    struct RemoveCgroup(String);
    impl Drop for RemoveCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
            let _ = std::fs::remove_dir(std::path::Path::new(&self.0).parent().unwrap());
        }
    }
    let _cgroup = RemoveCgroup(pod_cgroup.clone());

    let subnet = 63;
    let node = Node::new(subnet);
    let b = node.ip('b');
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&Namespace { metadata: mk_namespace("shop"), ..Default::default() });
    // The client pod's recorded IP is not the address its traffic comes from.
    api.apply::<Pod>(&mk_pod("shop", "checkout-0", &["10.99.99.99"]).with_uid(UID));
    api.apply::<Pod>(&mk_pod("shop", "cart-0", &[&b]));
    let dir = std::env::temp_dir().join(format!("e2e-node-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_mapper, mapper) = start_mapper(&dir, &write_kubeconfig(&dir, &api.url())).await;
    let health_port = free_port();
    let _agent = spawn(
        Command::new(binary("cluster-agent"))
            .args([
                "node",
                "--mapper-url",
                &mapper,
                "--shared-token",
                "node-secret",
                "--ship-interval-seconds",
                "0.2",
            ])
            .args(["--listen", &format!("127.0.0.1:{health_port}")])
            .env("RUST_LOG", "warn"),
    );
    wait_ready(&format!("http://127.0.0.1:{health_port}/healthz"), Duration::from_secs(30)).await;

    let _server = node.exec('b', "python3", &["-c", PY_SERVER, &b]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The client joins the pod's cgroup before it execs into its network namespace and connects.
    let _client = spawn(Command::new("sh").args([
        "-c",
        &format!(
            "echo $$ > {pod_cgroup}/cgroup.procs && exec ip netns exec {} python3 -c \"$0\" {b}",
            node.pods[0]
        ),
        PY_CLIENT,
    ]));
    let expected = "checkout-0 in namespace shop calls:\n  - cart-0\n";
    let listed = listed_when(&mapper, expected, Duration::from_secs(20)).await;
    assert_eq!(listed, expected, "the pod hint from the client's cgroup names it");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces and eBPF")]
async fn ebpf_capture_names_tcp_and_dns_between_pods() {
    scenario(false, 61).await;
}

#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces and a raw socket")]
async fn fallback_capture_names_tcp_and_dns_between_pods() {
    scenario(true, 62).await;
}

/// A client outside the cluster (an address no pod or node of the API has) connects to a pod:
/// the server's node reports the accepted connection, and the mapper records incoming internet
/// traffic on the pod's workload, in `list` and in the edges it uploads, never as a client.
#[tokio::test]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces and eBPF")]
async fn ebpf_capture_reports_incoming_internet_traffic_on_the_server() {
    testkit::need::root("network namespaces and eBPF");
    let subnet = 64;
    let mut node = Node::new(subnet);
    let b = node.ip('b');
    // The outside client is on the same bridge but not in the pods' network (another /24,
    // reached by a route each way), as a load balancer's client would be.
    let outside = format!("10.211.{subnet}.2");
    let outside_ns = node._bridge.add_pod(&format!("{outside}/24")).unwrap();
    testkit::netns::ip(&[
        "-n",
        &outside_ns,
        "route",
        "add",
        &format!("10.210.{subnet}.0/24"),
        "dev",
        "eth0",
    ]);
    testkit::netns::ip(&[
        "-n",
        &node.pods[1],
        "route",
        "add",
        &format!("10.211.{subnet}.0/24"),
        "dev",
        "eth0",
    ]);
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&Namespace { metadata: mk_namespace("shop"), ..Default::default() });
    api.apply::<Pod>(&mk_pod("shop", "cart-0", &[&b]));
    let dir = std::env::temp_dir().join(format!("e2e-node-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_mapper, mapper) = start_mapper(&dir, &write_kubeconfig(&dir, &api.url())).await;
    let health_port = free_port();
    let _agent = spawn(
        Command::new(binary("cluster-agent"))
            .args(["node", "--mapper-url", &mapper, "--shared-token", "node-secret"])
            .args(["--ship-interval-seconds", "0.2"])
            .args(["--listen", &format!("127.0.0.1:{health_port}")])
            .env("RUST_LOG", "warn"),
    );
    wait_ready(&format!("http://127.0.0.1:{health_port}/healthz"), Duration::from_secs(30)).await;

    let _server = node.exec('b', "python3", &["-c", PY_SERVER, &b]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _client = spawn(
        Command::new("ip")
            .args(["netns", "exec", &outside_ns, "python3", "-c", PY_CLIENT, &b])
            .stdin(Stdio::null()),
    );
    // Judged once the source has had time to turn out a pod (10 s), then listed.
    let expected = format!(
        "cart-0 in namespace shop is called from outside the cluster by:\n  - {outside} (ports: 8080)\n"
    );
    let listed = listed_when(&mapper, &expected, Duration::from_secs(30)).await;
    assert_eq!(listed, expected, "the outside client is incoming traffic of cart-0, not a client");
    let exported = Command::new(binary("intentmap"))
        .args(["--mapper-url", &mapper, "export", "--format", "json"])
        .output()
        .unwrap();
    let exported = String::from_utf8_lossy(&exported.stdout);
    assert!(!exported.contains(&outside), "ClientIntents describe clients only: {exported}");
    let metrics = tests::mapper_metrics(&mapper).await.expect("the mapper's /metrics");
    let incoming = metrics.iter().find(|(name, _)| name.ends_with("incoming_connections_total"));
    assert!(matches!(incoming, Some((_, n)) if *n >= 1.0), "{metrics:?}");

    // A transfer of known size from outside, closed: its bytes on the incoming edge, read as
    // the outside client's (what it sent went to cart-0), once judged (10 s).
    let _transfer_server = node.exec(
        'b',
        "python3",
        &["-c", PY_TRANSFER_SERVER, &b, &SENDS.to_string(), &RECEIVES.to_string()],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    transfer(&outside_ns, &b);
    let expected_bytes = serde_json::json!({"sent": SENDS, "received": RECEIVES});
    let bytes = edge_bytes(&mapper, "cart-0", "incoming", Duration::from_secs(30), |b| {
        *b == expected_bytes
    })
    .await;
    assert_eq!(bytes, expected_bytes, "the incoming transfer's bytes, once");
    std::fs::remove_dir_all(&dir).ok();
}
