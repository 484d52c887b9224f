//! Resolution throughput and the index's memory at the scale of a large cluster: 10,000 pods in
//! 1,000 Deployments (with their ReplicaSets) over 20 namespaces and 50 nodes, 1,000 Services
//! with EndpointSlices. Single-threaded, so the rates are per core.
//!
//! `cargo bench -p mapper-core --bench resolve`
//!
//! Targets: at least 1,000,000 observations/s/core, and an index under 64 MiB of heap (measured
//! with dhat while the index is built; the Kubernetes objects fed to it are made beforehand).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mapper_core::fixtures::*;
use mapper_core::{Mapper, MapperConfig, Resolution};
use model::observation::{DnsAnswer, ObservationBatch, TcpConnection};
use model::PortSpec;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const NAMESPACES: usize = 20;
const DEPLOYMENTS: usize = 1_000;
const PODS_PER_DEPLOYMENT: usize = 10;
const NODES: usize = 50;
/// Distinct observations, replayed until `OBSERVATIONS` have been made.
const DISTINCT: usize = 100_000;
const OBSERVATIONS: usize = 1_000_000;
const BATCH: usize = 1_000;
/// Of every 10 connections: 8 to a Service, 1 pod to pod, 1 to the internet.
const SERVICE_SHARE: u64 = 8;

const TARGET_RATE: f64 = 1_000_000.0;
const TARGET_HEAP: usize = 64 << 20;

struct Cluster {
    namespaces: Vec<ObjectMeta>,
    deployments: Vec<ObjectMeta>,
    replicasets: Vec<ObjectMeta>,
    pods: Vec<Pod>,
    services: Vec<Service>,
    slices: Vec<EndpointSlice>,
    nodes: Vec<Node>,
}

fn namespace(deployment: usize) -> String {
    format!("team-{:02}", deployment % NAMESPACES)
}

fn address(network: [u8; 2], i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(network[0], network[1], (i / 250) as u8, (i % 250 + 1) as u8))
}

fn pod_ip(pod: usize) -> IpAddr {
    address([10, 244], pod)
}

fn service_ip(service: usize) -> IpAddr {
    address([10, 96], service)
}

fn cluster() -> Cluster {
    let mut cluster = Cluster {
        namespaces: (0..NAMESPACES).map(|n| mk_namespace(&namespace(n))).collect(),
        deployments: Vec::new(),
        replicasets: Vec::new(),
        pods: Vec::new(),
        services: Vec::new(),
        slices: Vec::new(),
        nodes: (0..NODES)
            .map(|n| mk_node(&format!("node-{n:02}"), &[&address([10, 0], n).to_string()]))
            .collect(),
    };
    for d in 0..DEPLOYMENTS {
        let (ns, app) = (namespace(d), format!("service-{d:04}"));
        let replicaset = format!("{app}-7c9d5f6b8");
        cluster.deployments.push(mk_deployment(&ns, &app));
        cluster.replicasets.push(mk_replicaset(&ns, &replicaset, &app));
        let mut endpoints = Vec::new();
        for p in 0..PODS_PER_DEPLOYMENT {
            let index = d * PODS_PER_DEPLOYMENT + p;
            let name = format!("{replicaset}-{p:05}");
            let ip = pod_ip(index).to_string();
            let pod = mk_pod(&ns, &name, &[&ip])
                .owned_by("ReplicaSet", &replicaset)
                .labelled("app", &app)
                .labelled("pod-template-hash", "7c9d5f6b8")
                .labelled("app.kubernetes.io/part-of", "bench")
                .on_node(&format!("node-{:02}", index % NODES));
            cluster.pods.push(pod);
            endpoints.push((ip, name));
        }
        let endpoints: Vec<(&str, Option<&str>)> =
            endpoints.iter().map(|(ip, name)| (ip.as_str(), Some(name.as_str()))).collect();
        cluster.slices.push(mk_endpoint_slice(&ns, &app, &format!("{app}-x7k2p"), &endpoints));
        cluster.services.push(mk_service(
            &ns,
            &app,
            &[&service_ip(d).to_string()],
            &[("app", &app)],
        ));
    }
    cluster
}

fn feed(mapper: &mut Mapper, cluster: &Cluster) {
    mapper.index.reset_meta("Namespace", &cluster.namespaces);
    mapper.index.reset(&cluster.nodes);
    for meta in &cluster.deployments {
        mapper.index.apply_meta("Deployment", meta);
    }
    for meta in &cluster.replicasets {
        mapper.index.apply_meta("ReplicaSet", meta);
    }
    for pod in &cluster.pods {
        mapper.index.apply(pod);
    }
    for service in &cluster.services {
        mapper.index.apply(service);
    }
    for slice in &cluster.slices {
        mapper.index.apply(slice);
    }
}

/// xorshift64*: reproducible traffic without a dependency.
struct Traffic(u64);

impl Traffic {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Each Deployment calls the next five Services, one pod and the internet: about 7,000 edges.
fn observations(start: DateTime<Utc>) -> (Vec<ObservationBatch>, usize) {
    let mut traffic = Traffic(0x9e37_79b9_7f4a_7c15);
    let mut batches = Vec::new();
    let mut dns = 0;
    for b in 0..DISTINCT / BATCH {
        let mut batch =
            ObservationBatch { source: Some("node-00".to_owned()), ..ObservationBatch::default() };
        for i in 0..BATCH {
            let n = b * BATCH + i;
            let client_pod = (traffic.next() % (DEPLOYMENTS * PODS_PER_DEPLOYMENT) as u64) as usize;
            let client = client_pod / PODS_PER_DEPLOYMENT;
            let at = start + TimeDelta::milliseconds(n as i64);
            let roll = traffic.next() % 10;
            let (dst_ip, dst_port) = if roll < SERVICE_SHARE {
                (service_ip((client + 1 + (traffic.next() % 5) as usize) % DEPLOYMENTS), 8080)
            } else if roll == SERVICE_SHARE {
                (pod_ip(((client + 7) % DEPLOYMENTS) * PODS_PER_DEPLOYMENT), 9090)
            } else {
                let external = IpAddr::V4(Ipv4Addr::new(203, 0, 113, (client % 200) as u8 + 1));
                if n < DISTINCT / 2 {
                    batch.dns.push(DnsAnswer {
                        client_ip: pod_ip(client_pod),
                        name: format!("api-{}.example.com", client % 200),
                        cnames: vec![],
                        addresses: vec![external],
                        ttl_seconds: 300,
                        at,
                    });
                    dns += 1;
                }
                (external, 443)
            };
            batch.tcp.push(TcpConnection {
                src_port: 40_000 + (n % 20_000) as u16,
                ..TcpConnection::between(pod_ip(client_pod), dst_ip, dst_port, at)
            });
        }
        batches.push(batch);
    }
    (batches, dns)
}

fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn main() {
    let cluster = cluster();
    let start: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().expect("a valid time");
    let (batches, dns_answers) = observations(start);
    let now = start + TimeDelta::days(1);

    // --- The index's heap, measured while it is built from objects made beforehand.
    let profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    let built = Instant::now();
    let mut mapper = Mapper::new(MapperConfig::default());
    feed(&mut mapper, &cluster);
    let build_time = built.elapsed();
    let after = dhat::HeapStats::get();
    drop(profiler);
    let index_heap = after.curr_bytes.saturating_sub(before.curr_bytes);
    let stats = mapper.index.stats();
    println!(
        "index: {} pods, {} owners, {} services, {} endpoint slices, {} nodes, {} namespaces; built in {:.0} ms (apply per object)",
        stats.pods,
        stats.owners,
        stats.services,
        stats.endpoint_slices,
        stats.nodes,
        stats.namespaces,
        build_time.as_secs_f64() * 1e3
    );
    println!(
        "index heap: {:.1} MiB live ({} blocks), {:.1} MiB peak while building   [target < {} MiB: {}]",
        mib(index_heap),
        after.curr_blocks.saturating_sub(before.curr_blocks),
        mib(after.max_bytes.saturating_sub(before.curr_bytes)),
        TARGET_HEAP >> 20,
        verdict(index_heap < TARGET_HEAP)
    );

    // --- Resolution alone: the source and the destination of every connection.
    let connections: Vec<(IpAddr, IpAddr, Option<PortSpec>, DateTime<Utc>)> = batches
        .iter()
        .flat_map(|b| b.tcp.iter())
        .map(|c| {
            (
                c.src_ip,
                c.dst_ip,
                Some(PortSpec { port: c.dst_port, protocol: model::Protocol::Tcp }),
                c.at,
            )
        })
        .collect();
    let timer = Instant::now();
    let mut services = 0usize;
    for (src, dst, port, at) in connections.iter().cycle().take(OBSERVATIONS) {
        let client = mapper.index.resolve_address(*src, *at, None);
        let target = mapper.index.resolve_address(*dst, *at, *port);
        services += usize::from(matches!(target, Resolution::Service { .. }));
        black_box((client, target));
    }
    let elapsed = timer.elapsed();
    let resolve_rate = rate(OBSERVATIONS, elapsed);
    println!(
        "resolve: {OBSERVATIONS} observations (source and destination) in {:.0} ms: {:.2} M observations/s/core ({} to Services)   [target >= {:.0} M: {}]",
        elapsed.as_secs_f64() * 1e3,
        resolve_rate / 1e6,
        services,
        TARGET_RATE / 1e6,
        verdict(resolve_rate >= TARGET_RATE)
    );

    // --- The whole pipeline: resolution, DNS memory and the edge store.
    let rounds = OBSERVATIONS / DISTINCT;
    let timer = Instant::now();
    for _ in 0..rounds {
        for batch in &batches {
            mapper.observe(batch, now);
        }
    }
    let elapsed = timer.elapsed();
    let observe_rate = rate(OBSERVATIONS, elapsed);
    let observed = mapper.stats();
    println!(
        "observe: {OBSERVATIONS} TCP connections (+{} DNS answers) in batches of {BATCH} in {:.0} ms: {:.2} M observations/s/core; {} edges, {} dropped, {} unknown clients   [target >= {:.0} M: {}]",
        dns_answers * rounds,
        elapsed.as_secs_f64() * 1e3,
        observe_rate / 1e6,
        mapper.edges().len(),
        observed.dropped_edges,
        observed.unknown_clients,
        TARGET_RATE / 1e6,
        verdict(observe_rate >= TARGET_RATE)
    );

    // --- Allocations on the hot path, once the edges exist.
    let profiler = dhat::Profiler::builder().testing().build();
    let before = dhat::HeapStats::get();
    for batch in &batches {
        mapper.observe(batch, now);
    }
    let after = dhat::HeapStats::get();
    drop(profiler);
    println!(
        "allocations: {:.3} per observation in steady state ({} blocks for {} observations)",
        (after.total_blocks - before.total_blocks) as f64 / DISTINCT as f64,
        after.total_blocks - before.total_blocks,
        DISTINCT
    );
    black_box(mapper.snapshot().len());
}
