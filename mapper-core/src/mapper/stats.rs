//! The mapper's counters. Every observation that does not become an edge is counted somewhere;
//! every counter saturates rather than overflows (a panic would poison the mapper's lock).

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapperStats {
    pub batches: u64,
    /// TCP connection lines that were recorded as edges.
    pub tcp_connections: u64,
    /// TCP close lines (a closed connection's bytes, no new connection) added to edges,
    /// incoming internet traffic's included.
    pub tcp_closes: u64,
    /// Answers for names outside the cluster, remembered to name later connections.
    pub dns_answers: u64,
    /// Answers for Services and pods, recorded as edges.
    pub dns_cluster_answers: u64,
    pub aws_operations: u64,
    /// Observations whose client is not a known pod, hostNetwork pod or node.
    pub unknown_clients: u64,
    /// Observations a node agent sent about a client on another node (each node speaks for its
    /// own pods; the client's node reports the connection itself).
    pub foreign_clients: u64,
    /// Lines of a kind the sender may not send (`aws-proxy` sending TCP or DNS lines).
    pub unpermitted_observations: u64,
    /// Connections to a pod address that no pod held at the time.
    pub unattributed_targets: u64,
    /// Observations whose client or target address two running pods held at the time (a CNI
    /// race, or a stale pod object): named as neither.
    pub contested_addresses: u64,
    /// Observations whose node named a pod (its pod hint) the index does not know, from an
    /// address that was not that pod's at the time: refused, not blamed on the address.
    pub unknown_hinted_pods: u64,
    /// Connections to loopback, unspecified, multicast or broadcast addresses.
    pub ignored_destinations: u64,
    /// Observations with nothing usable (a DNS answer without a usable name, an AWS service that is not one).
    pub invalid_observations: u64,
    /// DNS answers for names in the cluster's domain that the index does not know.
    pub unknown_cluster_names: u64,
    /// Observations stamped later than `now`, recorded at `now`.
    pub clamped_timestamps: u64,
    /// Edges refused because the edge store was full.
    pub dropped_edges: u64,
    pub expired_edges: u64,
    /// DNS answers forgotten early because the DNS memory was full.
    pub dns_evictions: u64,
    /// HTTP paths and Kafka topics left off edges that already had the most allowed.
    pub dropped_details: u64,
    /// Accepted connections from outside the cluster recorded as incoming internet traffic.
    pub incoming_connections: u64,
    /// Accepted connections from unknown sources dropped because too many waited to be judged.
    pub incoming_dropped: u64,
    /// Accepted connections (the server's side) whose client is a workload: the client's own
    /// side reports the call, so it is not counted again.
    pub accepted_from_workloads: u64,

    /// Kafka topic accesses (authorizer log lines) recorded.
    pub kafka_accesses: u64,
    /// Broker log lines that are not authorizer lines.
    pub kafka_other_lines: u64,
    /// Authorizer lines that could not be read, or named a topic Kafka would not accept.
    pub kafka_malformed_lines: u64,
    /// Authorizer lines with an operation the ClientIntents CRD has no name for.
    pub kafka_unknown_operations: u64,
    /// Authorizer lines about a Group, the Cluster, a TransactionalId...: not topics, skipped.
    pub kafka_non_topic_lines: u64,
    /// Authorizer lines about a topic pattern (`PREFIXED`, the wildcard `*`), not a topic: skipped.
    pub kafka_topic_patterns: u64,
    /// Authorizer lines whose client address names no pod or node at that time.
    pub kafka_unresolved_hosts: u64,
    /// Authorizer lines of a broker pod the index does not know (yet).
    pub kafka_unknown_brokers: u64,

    /// Sidecar metrics scraped, and scrapes that failed.
    pub istio_scrapes: u64,
    pub istio_scrape_failures: u64,
    /// Scrapes taken as a baseline (a pod's first): nothing reported from them.
    pub istio_baselines: u64,
    /// Requests recorded from `istio_requests_total` increases.
    pub http_requests: u64,
    /// Series whose counter went down (a sidecar restart).
    pub istio_counter_resets: u64,
    /// Lines of the metrics text that could not be read.
    pub istio_malformed_lines: u64,
    /// Series past the per-pod or overall limit, not followed.
    pub istio_untracked_series: u64,
    /// Client-side series left to the destination's sidecar, which reports the same requests.
    pub istio_left_to_destination: u64,
    /// Series whose client (`source_workload`) is unknown or not a Kubernetes name.
    pub istio_unknown_clients: u64,
    /// Client-side series whose destination is neither a workload nor a Service the index knows.
    pub istio_unknown_targets: u64,
    /// Series with a `reporter` other than `source` or `destination`.
    pub istio_unknown_reporters: u64,
    /// Series with a method the CRD does not name (`HEAD`...): the call is recorded, without its path.
    pub istio_unknown_methods: u64,
    /// Series with a path that is not one or is too long: the call is recorded, without its path.
    pub istio_unusable_paths: u64,
    /// Increases nothing vouched for (no claim from the client's sidecar, no observed
    /// connection): not recorded.
    pub istio_uncorroborated: u64,
    /// Increases past the round's limit, not recorded.
    pub istio_dropped_increases: u64,
    /// Clients' claims not kept for want of room.
    pub istio_refused_claims: u64,
    /// Ambient proxies' (ztunnel, waypoints) metrics scraped; failures count in
    /// `istio_scrape_failures`.
    pub istio_ambient_scrapes: u64,
    /// ztunnel series about a pod not enrolled on its own node, or whose SPIFFE principal names
    /// another namespace than its workload label: dropped.
    pub istio_foreign_series: u64,
    /// ztunnel series of a hop to or from a waypoint, left to the waypoint's own count.
    pub istio_waypoint_hops: u64,
}

impl MapperStats {
    /// The counter a recorded TCP line of `count` connections goes to: a close line (0) or
    /// connections.
    pub(crate) fn tcp_line(&mut self, count: u64) -> &mut u64 {
        if count == 0 {
            &mut self.tcp_closes
        } else {
            &mut self.tcp_connections
        }
    }
}

/// `counter += by`, saturating.
pub(crate) fn add(counter: &mut u64, by: u64) {
    *counter = counter.saturating_add(by);
}

/// `counter += 1`, saturating.
pub(crate) fn bump(counter: &mut u64) {
    add(counter, 1);
}
