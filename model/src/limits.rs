//! The bounds of the `EdgeReport` wire format. The cloud refuses a report past any of them
//! (while parsing, before building what it would cost), so one tenant cannot make it hold
//! gigabytes; senders trim and split with [`crate::report::fit`] to stay within them. Each is
//! documented in README's EdgeReport section.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};

/// Edges in one report.
pub const MAX_EDGES_PER_REPORT: usize = 50_000;
/// Workloads in one report's `exposed` list.
pub const MAX_EXPOSED_PER_REPORT: usize = 10_000;
/// List entries in one report, all lists of all edges and exposed workloads together (ports,
/// domains, IPs, actions, paths, methods, topics, operations, addresses, hostnames). A parsed
/// entry costs about 60 bytes of memory, so this bounds a report at about 30 MB however its
/// JSON is shaped.
pub const MAX_LIST_ENTRIES_PER_REPORT: usize = 500_000;

/// Ports on one edge (`ports`), and an internet target's `ports`.
pub const MAX_PORTS_PER_EDGE: usize = 1_000;
/// An internet target's `domains`, and its `ips`; an exposed workload's `addresses`, and its
/// `hostnames`.
pub const MAX_ADDRESSES_PER_LIST: usize = 1_000;
/// An AWS target's `actions`.
pub const MAX_ACTIONS_PER_EDGE: usize = 1_000;
/// HTTP paths, and Kafka topics, on one edge of one report.
pub const MAX_RESOURCES_PER_EDGE: usize = 1_000;
/// Methods listed for one path, or operations (or denied operations) for one topic.
pub const MAX_VERBS: usize = 32;

/// Kubernetes names and namespaces (DNS-1123 subdomains).
pub const MAX_NAME_BYTES: usize = 253;
/// A Kubernetes kind (`Deployment`).
pub const MAX_KIND_BYTES: usize = 63;
/// A DNS name, with its optional trailing dot.
pub const MAX_DNS_NAME_BYTES: usize = 254;
/// An IP address as text (the longest IPv6 form is 45).
pub const MAX_IP_BYTES: usize = 64;
/// An AWS ARN (IAM's own limit).
pub const MAX_ARN_BYTES: usize = 2_048;
/// An IAM action (`s3:GetObject`).
pub const MAX_ACTION_BYTES: usize = 256;
/// The longest HTTP path accepted, in bytes.
pub const MAX_HTTP_PATH_BYTES: usize = 2_048;
/// Kafka's own limit on topic names.
pub const MAX_TOPIC_NAME_CHARS: usize = 249;
/// An HTTP method or a Kafka operation name.
pub const MAX_VERB_BYTES: usize = 32;

/// Timestamps (`generated_at`, `first_seen`, `last_seen`) may be at most this far ahead of the
/// receiver's clock.
pub const MAX_CLOCK_AHEAD: TimeDelta = TimeDelta::days(1);

/// The earliest timestamp accepted: 2000-01-01T00:00:00Z.
pub fn earliest_timestamp() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single().unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Connection counts are stored as signed 64-bit integers; larger counts saturate here.
pub const MAX_CONNECTIONS: u64 = i64::MAX as u64;
