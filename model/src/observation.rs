//! What node agents and `aws-proxy` tell the mapper: raw observations, before any naming.
//!
//! Sent as `ObservationBatch` JSON to the mapper's `POST /v1/observations`.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A TCP connection seen on a node: `src` connected to `dst`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpConnection {
    pub src_ip: IpAddr,
    pub src_port: u16,
    pub dst_ip: IpAddr,
    pub dst_port: u16,
    pub at: DateTime<Utc>,
    /// How many connections this line stands for (a node agent may aggregate); 1 if absent.
    #[serde(default = "one")]
    pub count: u64,
    /// What the node knows about the connecting process, when it knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// The connecting pod, when the node could tell it from the cgroup or network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodHint>,
    /// The node saw the server's side: a process on it accepted the connection (`dst` is the
    /// local end). A source outside the cluster is then incoming internet traffic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accepted: bool,
    /// Set on the line a node agent sends when the connection closed (with `count` 0: it is
    /// not another connection): the bytes it carried, from the client's view (`sent` went from
    /// `src` to `dst`), as the kernel counted them on the socket of the side `accepted` names.
    /// Absent when unmeasured (every other line; the /proc fallback measures nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<crate::Traffic>,
}

impl TcpConnection {
    /// One connection from `src` to `dst` (port 40000 to `dst_port`) at `at`, with nothing else
    /// known: no process, pod, side or bytes. Fields are public: set what else is known.
    pub fn between(src_ip: IpAddr, dst_ip: IpAddr, dst_port: u16, at: DateTime<Utc>) -> Self {
        TcpConnection {
            src_ip,
            src_port: 40000,
            dst_ip,
            dst_port,
            at,
            count: 1,
            pid: None,
            netns: None,
            pod: None,
            accepted: false,
            bytes: None,
        }
    }
}

fn one() -> u64 {
    1
}

/// A pod named by the node agent (from its cgroup path or network namespace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodHint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A DNS answer delivered to a client on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsAnswer {
    pub client_ip: IpAddr,
    /// The name as queried, without the trailing dot.
    pub name: String,
    /// CNAMEs followed from `name`, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cnames: Vec<String>,
    #[serde(default)]
    pub addresses: Vec<IpAddr>,
    #[serde(default)]
    pub ttl_seconds: u32,
    pub at: DateTime<Utc>,
}

/// An AWS API call seen by `aws-proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsOperation {
    pub client_ip: IpAddr,
    /// The SigV4 service, e.g. `s3`.
    pub service: String,
    /// The IAM action, e.g. `s3:GetObject`.
    pub action: String,
    /// The resource ARN, when it could be derived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    pub at: DateTime<Utc>,
}

/// One POST of observations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationBatch {
    /// Who sends: a node name or `aws-proxy`; for logs and metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpConnection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsAnswer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aws: Vec<AwsOperation>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_round_trips_and_defaults_count_to_one() {
        let json = r#"{"source": "node-1",
            "tcp": [{"src_ip": "10.0.0.5", "src_port": 40000, "dst_ip": "fd00::7", "dst_port": 7070, "at": "2026-11-24T18:00:00Z"}],
            "dns": [{"client_ip": "10.0.0.5", "name": "api.stripe.com", "addresses": ["203.0.113.7"], "ttl_seconds": 60, "at": "2026-11-24T18:00:00Z"}],
            "aws": [{"client_ip": "10.0.0.5", "service": "s3", "action": "s3:GetObject", "resource": "arn:aws:s3:::invoices/x", "at": "2026-11-24T18:00:00Z"}]}"#;
        let batch: ObservationBatch = serde_json::from_str(json).unwrap();
        assert_eq!(batch.tcp[0].count, 1);
        assert!(batch.tcp[0].dst_ip.is_ipv6());
        assert_eq!(batch.tcp[0].bytes, None);
        let again: ObservationBatch =
            serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
        assert_eq!(again, batch);
    }

    #[test]
    fn a_close_line_carries_bytes_and_counts_no_connection() {
        let json = r#"{"src_ip": "10.0.0.5", "src_port": 40000, "dst_ip": "10.0.0.7", "dst_port": 7070,
            "at": "2026-11-24T18:00:00Z", "count": 0, "bytes": {"sent": 1200, "received": 35000}}"#;
        let line: TcpConnection = serde_json::from_str(json).unwrap();
        assert_eq!(
            (line.count, line.bytes),
            (0, Some(crate::Traffic { sent: 1200, received: 35000 }))
        );
        assert!(serde_json::to_string(&line)
            .unwrap()
            .contains(r#""bytes":{"sent":1200,"received":35000}"#));
        // Negative or unknown fields in bytes are refused.
        assert!(serde_json::from_str::<TcpConnection>(&json.replace("1200", "-1")).is_err());
        assert!(serde_json::from_str::<TcpConnection>(&json.replace("\"sent\"", "\"up\"")).is_err());
    }
}
