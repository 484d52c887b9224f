//! Scenario tests: the index fed as watchers would, observations as node agents would send them.

mod ecom_demo;
mod identity;
mod istio;
mod pipeline;
mod resolution;
mod watchers;

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use model::observation::{AwsOperation, DnsAnswer, ObservationBatch, PodHint, TcpConnection};
use model::{Edge, EdgeReport};

use crate::fixtures::*;
use crate::{Index, Mapper};

/// `rounds` mutations of `seeds` (taken in turn): up to `max_edits` removals, insertions from
/// `alphabet` or truncations each, from a fixed-seed xorshift generator so failures reproduce.
pub(crate) fn mutations<'a>(
    seeds: &'a [&'a str],
    alphabet: &'a str,
    rounds: usize,
    max_edits: u64,
    seed: u64,
) -> impl Iterator<Item = String> + 'a {
    let alphabet: Vec<char> = alphabet.chars().collect();
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..rounds).map(move |round| {
        let mut chars: Vec<char> = seeds[round % seeds.len()].chars().collect();
        for _ in 0..=(next() % max_edits) {
            let at = (next() as usize) % (chars.len() + 1);
            match next() % 3 {
                0 if at < chars.len() => {
                    chars.remove(at);
                }
                1 => chars.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                _ => chars.truncate(at),
            }
        }
        chars.into_iter().collect()
    })
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("test address {s:?}: {e}"))
}

pub(crate) fn tcp(src: &str, dst: &str, port: u16, at: &str) -> TcpConnection {
    TcpConnection::between(ip(src), ip(dst), port, ts(at))
}

pub(crate) fn hinted(mut connection: TcpConnection, namespace: &str, name: &str) -> TcpConnection {
    connection.pod = Some(PodHint {
        uid: None,
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
    });
    connection
}

pub(crate) fn dns(
    client: &str,
    name: &str,
    cnames: &[&str],
    addresses: &[&str],
    at: &str,
) -> DnsAnswer {
    DnsAnswer {
        client_ip: ip(client),
        name: name.to_owned(),
        cnames: cnames.iter().map(|c| (*c).to_owned()).collect(),
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        ttl_seconds: 30,
        at: ts(at),
    }
}

pub(crate) fn aws(
    client: &str,
    service: &str,
    action: &str,
    resource: Option<&str>,
    region: Option<&str>,
    at: &str,
) -> AwsOperation {
    AwsOperation {
        client_ip: ip(client),
        service: service.to_owned(),
        action: action.to_owned(),
        resource: resource.map(str::to_owned),
        region: region.map(str::to_owned),
        at: ts(at),
    }
}

pub(crate) fn batch(tcp: Vec<TcpConnection>) -> ObservationBatch {
    ObservationBatch { source: Some("node-1".to_owned()), tcp, ..ObservationBatch::default() }
}

pub(crate) fn later() -> DateTime<Utc> {
    ts("2026-06-01T00:00:00Z")
}

/// A Deployment with one ReplicaSet and one pod labelled `app=<name>`; returns the pod's name.
pub(crate) fn deploy(index: &mut Index, namespace: &str, name: &str, ips: &[&str]) -> String {
    let replicaset = format!("{name}-5d9c7b");
    let pod = format!("{replicaset}-x2x9q");
    index.apply_meta("Deployment", &mk_deployment(namespace, name));
    index.apply_meta("ReplicaSet", &mk_replicaset(namespace, &replicaset, name));
    index.apply(
        &mk_pod(namespace, &pod, ips).owned_by("ReplicaSet", &replicaset).labelled("app", name),
    );
    pod
}

/// The edges as the cloud would receive them: they must pass its validation.
pub(crate) fn assert_reportable(edges: &[Edge]) {
    let report = serde_json::json!({
        "schema_version": model::SCHEMA_VERSION,
        "report_id": "6f1d3b5e-7c53-4d63-9a43-2d0c5b1b9a10",
        "generated_at": "2026-01-01T00:00:00Z",
        "edges": edges,
    });
    if let Err(e) = EdgeReport::from_json(report.to_string().as_bytes()) {
        panic!("the edges do not make a valid report: {e}\n{edges:#?}");
    }
}

pub(crate) fn mapper() -> Mapper {
    Mapper::default()
}
