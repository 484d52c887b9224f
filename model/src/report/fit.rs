//! Fitting a sender's report to the cloud's limits, so that nothing is refused as a whole.
//!
//! The mapper's edges can outgrow one report: after a long outage a merged backlog may hold
//! more than [`MAX_EDGES_PER_REPORT`] edges, and a busy internet target may collect more IPs
//! than a list may carry. [`fit`] trims each list to its limit (sorted, keeping the first
//! entries, so an internet target keeps the domain that names it), drops edges the cloud would
//! refuse (each counted, with its reason), and splits the rest into as many reports as the edge
//! and entry limits need. Every part carries the whole `exposed` set and the same
//! `generated_at`, since the cloud keeps the exposed set of the newest report.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{validate_edge, validate_exposed, EdgeReport, ExposedWorkload, TimeBounds};
use crate::edge::{merge_http, merge_kafka, union, Edge, Target, Traffic};
use crate::limits::*;

/// What [`fit`] made of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    /// At least one report (the first keeps the original id), each within every limit.
    pub reports: Vec<EdgeReport>,
    /// List entries left off because a list was longer than its limit.
    pub trimmed_entries: usize,
    /// Edges and exposed workloads left out because the cloud would refuse them, with why.
    pub dropped: Vec<String>,
}

/// Every list entry of a report, as [`MAX_LIST_ENTRIES_PER_REPORT`] counts them.
pub fn list_entries(report: &EdgeReport) -> usize {
    report.edges.iter().map(edge_entries).sum::<usize>()
        + report.exposed.iter().map(exposed_entries).sum::<usize>()
}

pub fn edge_entries(edge: &Edge) -> usize {
    let target = match &edge.target {
        Target::Internet(i) | Target::Incoming(i) => i.domains.len() + i.ips.len() + i.ports.len(),
        Target::Aws(a) => a.actions.len(),
        Target::Kubernetes(_) | Target::Service(_) | Target::Kafka(_) => 0,
    };
    let http: usize = edge.http.iter().map(|r| 1 + r.methods.len()).sum();
    let kafka: usize = edge.kafka.iter().map(|t| 1 + t.operations.len() + t.denied.len()).sum();
    edge.ports.len() + target + http + kafka
}

/// Whether every list of `edge` is within its limit (what [`trim_edge`] makes true).
pub fn edge_within_limits(edge: &Edge) -> bool {
    let target = match &edge.target {
        Target::Internet(i) | Target::Incoming(i) => {
            i.domains.len() <= MAX_ADDRESSES_PER_LIST
                && i.ips.len() <= MAX_ADDRESSES_PER_LIST
                && i.ports.len() <= MAX_PORTS_PER_EDGE
        }
        Target::Aws(a) => a.actions.len() <= MAX_ACTIONS_PER_EDGE,
        Target::Kubernetes(_) | Target::Service(_) | Target::Kafka(_) => true,
    };
    target
        && edge.ports.len() <= MAX_PORTS_PER_EDGE
        && edge.http.len() <= MAX_RESOURCES_PER_EDGE
        && edge.kafka.len() <= MAX_RESOURCES_PER_EDGE
        && edge.http.iter().all(|r| r.methods.len() <= MAX_VERBS)
        && edge.kafka.iter().all(|t| t.operations.len() <= MAX_VERBS && t.denied.len() <= MAX_VERBS)
}

fn exposed_entries(x: &ExposedWorkload) -> usize {
    x.addresses.len() + x.hostnames.len()
}

/// Sorts and deduplicates `list` and keeps at most `max` entries; returns how many it left off.
fn trim<T: Ord + Clone>(list: &mut Vec<T>, max: usize) -> usize {
    *list = union(list, &[]);
    let over = list.len().saturating_sub(max);
    list.truncate(max);
    over
}

/// Trims every list of `edge` to its limit; returns how many entries it left off.
pub fn trim_edge(edge: &mut Edge) -> usize {
    let mut over = trim(&mut edge.ports, MAX_PORTS_PER_EDGE);
    match &mut edge.target {
        Target::Internet(i) | Target::Incoming(i) => {
            over += trim(&mut i.domains, MAX_ADDRESSES_PER_LIST)
                + trim(&mut i.ips, MAX_ADDRESSES_PER_LIST)
                + trim(&mut i.ports, MAX_PORTS_PER_EDGE);
        }
        Target::Aws(a) => over += trim(&mut a.actions, MAX_ACTIONS_PER_EDGE),
        Target::Kubernetes(_) | Target::Service(_) | Target::Kafka(_) => {}
    }
    edge.http = merge_http(&edge.http, &[]);
    over += edge.http.len().saturating_sub(MAX_RESOURCES_PER_EDGE);
    edge.http.truncate(MAX_RESOURCES_PER_EDGE);
    for r in &mut edge.http {
        over += trim(&mut r.methods, MAX_VERBS);
    }
    edge.kafka = merge_kafka(&edge.kafka, &[]);
    over += edge.kafka.len().saturating_sub(MAX_RESOURCES_PER_EDGE);
    edge.kafka.truncate(MAX_RESOURCES_PER_EDGE);
    for t in &mut edge.kafka {
        over += trim(&mut t.operations, MAX_VERBS) + trim(&mut t.denied, MAX_VERBS);
        t.denied.retain(|op| t.operations.contains(op));
    }
    edge.connections = edge.connections.min(MAX_CONNECTIONS);
    edge.bytes = edge.bytes.map(|b| Traffic::default().saturating_add(b));
    over
}

/// Fits `report` to the limits, `now` being the sender's clock (see the module documentation).
/// `new_id` names the second and later parts.
pub fn fit(report: EdgeReport, now: DateTime<Utc>, mut new_id: impl FnMut() -> Uuid) -> Fitted {
    let EdgeReport { report_id, generated_at, edges, exposed, .. } = report;
    let mut trimmed_entries = 0;
    let mut dropped = Vec::new();

    // The exposed set travels in every part: keep it within half of a part's entries.
    let mut kept_exposed = Vec::new();
    let mut exposed_budget = MAX_LIST_ENTRIES_PER_REPORT / 2;
    for mut x in exposed {
        trimmed_entries += trim(&mut x.addresses, MAX_ADDRESSES_PER_LIST)
            + trim(&mut x.hostnames, MAX_ADDRESSES_PER_LIST);
        if let Err((field, problem)) = validate_exposed(&x) {
            dropped
                .push(format!("exposed workload {}/{}: {field}: {problem}", x.namespace, x.name));
            continue;
        }
        let entries = exposed_entries(&x);
        if kept_exposed.len() == MAX_EXPOSED_PER_REPORT || entries > exposed_budget {
            trimmed_entries += entries;
            dropped.push(format!("exposed workload {}/{}: over the limit of {MAX_EXPOSED_PER_REPORT} workloads a report", x.namespace, x.name));
            continue;
        }
        exposed_budget -= entries;
        kept_exposed.push(x);
    }
    let entries_per_part =
        MAX_LIST_ENTRIES_PER_REPORT - kept_exposed.iter().map(exposed_entries).sum::<usize>();

    let times = TimeBounds::at(now);
    let mut parts: Vec<Vec<Edge>> = vec![Vec::new()];
    let mut part_entries = 0;
    for mut edge in edges {
        trimmed_entries += trim_edge(&mut edge);
        if let Err((field, problem)) = validate_edge(&edge, &times) {
            dropped.push(format!(
                "edge {} -> {}: {field}: {problem}",
                edge.client,
                edge.key().target_name
            ));
            continue;
        }
        let entries = edge_entries(&edge);
        let current = parts.last().map_or(0, Vec::len);
        if current > 0
            && (current == MAX_EDGES_PER_REPORT || part_entries + entries > entries_per_part)
        {
            parts.push(Vec::new());
            part_entries = 0;
        }
        part_entries += entries;
        if let Some(part) = parts.last_mut() {
            part.push(edge);
        }
    }
    let reports = parts
        .into_iter()
        .enumerate()
        .map(|(i, edges)| {
            let id = if i == 0 { report_id } else { new_id() };
            EdgeReport::new(id, generated_at, edges, kept_exposed.clone())
        })
        .collect();
    Fitted { reports, trimmed_entries, dropped }
}
