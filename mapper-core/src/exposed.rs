//! The workloads reachable from outside the cluster, for the cloud to resolve calls that other
//! clusters make to these addresses and hostnames.
//!
//! - A Service's `externalIPs` and LoadBalancer ingress IPs and hostnames expose the workloads
//!   behind it (a Service nothing backs right now exposes nothing).
//! - An Ingress's rule hosts expose the workloads behind that rule's backend Services (a rule
//!   without paths: the default backend), and its load balancer IPs and hostnames expose the
//!   workloads behind all of its backends.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use model::ExposedWorkload;

use crate::identity::Workload;
use crate::index::{Index, Name};
use crate::names::is_dns_name;

#[derive(Default)]
struct Exposure {
    kind: Option<Name>,
    addresses: BTreeSet<String>,
    hostnames: BTreeSet<String>,
}

#[derive(Default)]
struct Exposures(BTreeMap<(Name, Name), Exposure>);

impl Exposures {
    fn add<'a>(
        &mut self,
        backends: &[Arc<Workload>],
        addresses: impl Iterator<Item = &'a Name> + Clone,
    ) {
        for backend in backends {
            let exposure =
                self.0.entry((backend.namespace.clone(), backend.name.clone())).or_default();
            exposure.kind.get_or_insert_with(|| backend.kind.clone());
            for address in addresses.clone() {
                let address = address.trim();
                if let Ok(ip) = address.parse::<IpAddr>() {
                    exposure.addresses.insert(ip.to_canonical().to_string());
                } else if is_dns_name(address) {
                    exposure.hostnames.insert(address.trim_end_matches('.').to_ascii_lowercase());
                }
            }
        }
    }
}

impl Index {
    /// The cluster's exposed workloads, sorted by namespace and name.
    pub fn exposed(&self) -> Vec<ExposedWorkload> {
        let mut exposures = Exposures::default();
        for (_, _, service) in self.services.iter() {
            exposures.add(
                &service.backends,
                service.external_ips.iter().chain(service.load_balancer.iter()),
            );
        }
        for (namespace, _, ingress) in self.ingresses.iter() {
            let backends_of = |service: &Name| {
                self.services
                    .get(namespace, service)
                    .map(|s| s.backends.clone())
                    .unwrap_or_else(|| Arc::from([]))
            };
            let default_backends =
                ingress.default_service.as_ref().map(backends_of).unwrap_or_else(|| Arc::from([]));
            exposures.add(&default_backends, ingress.load_balancer.iter());
            for rule in ingress.rules.iter() {
                let mut backends: Vec<Arc<Workload>> =
                    rule.services.iter().flat_map(|s| backends_of(s).to_vec()).collect();
                if rule.services.is_empty() {
                    backends.extend(default_backends.iter().cloned());
                }
                exposures.add(&backends, ingress.load_balancer.iter().chain(rule.host.iter()));
            }
        }
        exposures
            .0
            .into_iter()
            .filter(|(_, e)| !e.addresses.is_empty() || !e.hostnames.is_empty())
            .map(|((namespace, name), e)| ExposedWorkload {
                namespace: namespace.to_string(),
                name: name.to_string(),
                kind: e.kind.map(|k| k.to_string()),
                addresses: e.addresses.into_iter().collect(),
                hostnames: e.hostnames.into_iter().collect(),
            })
            .collect()
    }
}
