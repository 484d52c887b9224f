//! Kafka brokers' authorizer log lines into Kafka edges.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::WorkloadRef;

use super::stats::bump;
use super::{Mapper, Reporter};
use crate::edges::{Detail, Observation, ObservedTarget, Recorded};
use crate::identity::Workload;
use crate::kafka::{self, AuthorizerLine, TopicRefused};

/// Whose authorizer log a line is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaBroker {
    /// A broker pod: its workload (owner walk) is the target.
    Pod { namespace: String, name: String },
    /// A broker outside the cluster (a log file), named explicitly.
    Workload(WorkloadRef),
}

impl Mapper {
    /// Turns a broker's authorizer log lines (complete lines, each with the time it was logged)
    /// into Kafka edges: the client named by its address at that time, the broker's workload
    /// the target, the topic and operation (denied or not) on the edge. Lines that do not make
    /// a topic access are counted in [`super::MapperStats`] and skipped.
    pub fn observe_kafka_log<'l>(
        &mut self,
        broker: &KafkaBroker,
        lines: impl IntoIterator<Item = (DateTime<Utc>, &'l str)>,
        now: DateTime<Utc>,
    ) {
        let broker = match broker {
            KafkaBroker::Pod { namespace, name } => self.index.pod_workload(namespace, name),
            KafkaBroker::Workload(w) => {
                Some(self.index.workload_named(&w.namespace, &w.name).unwrap_or_else(|| {
                    Arc::new(Workload::named(&w.namespace, &w.name, w.kind.as_deref()))
                }))
            }
        };
        for (at, line) in lines {
            let entry = match kafka::parse_authorizer_line(line) {
                AuthorizerLine::Entry(entry) => entry,
                AuthorizerLine::Other => {
                    bump(&mut self.stats.kafka_other_lines);
                    continue;
                }
                AuthorizerLine::Malformed(_) => {
                    bump(&mut self.stats.kafka_malformed_lines);
                    continue;
                }
            };
            if entry.resource_type != "Topic" {
                bump(&mut self.stats.kafka_non_topic_lines);
                continue;
            }
            let Some(operation) = kafka::crd_operation(entry.operation) else {
                bump(&mut self.stats.kafka_unknown_operations);
                continue;
            };
            let topic = match kafka::topic_name(&entry) {
                Ok(topic) => topic,
                Err(TopicRefused::Pattern) => {
                    bump(&mut self.stats.kafka_topic_patterns);
                    continue;
                }
                Err(TopicRefused::Illegal) => {
                    bump(&mut self.stats.kafka_malformed_lines);
                    continue;
                }
            };
            let Some(broker) = &broker else {
                bump(&mut self.stats.kafka_unknown_brokers);
                continue;
            };
            let at = self.clamp(at, now);
            let Some(client) = kafka::host_address(entry.host).and_then(|ip| {
                // A contested address is no one's: counted as unresolved.
                self.reported_client(Reporter::Anyone, None, ip, at).ok().flatten()
            }) else {
                bump(&mut self.stats.kafka_unresolved_hosts);
                continue;
            };
            let detail = Detail::Kafka { topic, operation, denied: !entry.allowed };
            let observation = Observation {
                client: &client,
                target: ObservedTarget::Kafka(broker),
                port: None,
                at,
                connections: 1,
                detail,
                connection: false,
                bytes: None,
            };
            if self.edges.record(&observation) != Recorded::Refused {
                bump(&mut self.stats.kafka_accesses);
            }
        }
    }
}
