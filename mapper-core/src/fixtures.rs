//! Builders of Kubernetes objects as watchers deliver them, for tests here and in other crates.
//!
//! Every object is created at [`CREATED`] with UID `uid-<namespace>-<name>`; pods are `Running`
//! and started at [`CREATED`]. The `*Builder` traits adjust them:
//!
//! ```
//! use mapper_core::fixtures::*;
//! let pod = mk_pod("shop", "cart-7d9f-x2x", &["10.244.0.7"]).owned_by("ReplicaSet", "cart-7d9f").labelled("app", "cart");
//! let mut index = mapper_core::Index::default();
//! index.apply_meta("Deployment", &mk_deployment("shop", "cart"));
//! index.apply_meta("ReplicaSet", &mk_replicaset("shop", "cart-7d9f", "cart"));
//! index.apply(&pod);
//! assert_eq!(&*index.pod_workload("shop", "cart-7d9f-x2x").unwrap().name, "cart");
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, LoadBalancerIngress, LoadBalancerStatus, Node, NodeAddress,
    NodeStatus, ObjectReference, Pod, PodIP, PodSpec, PodStatus, Service, ServiceSpec,
    ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressLoadBalancerIngress,
    IngressLoadBalancerStatus, IngressRule, IngressServiceBackend, IngressSpec, IngressStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;

/// When every fixture object was created.
pub const CREATED: &str = "2026-01-01T00:00:00Z";

/// Parses an RFC 3339 time. Panics on a malformed one: fixtures are test input.
pub fn ts(rfc3339: &str) -> DateTime<Utc> {
    rfc3339.parse().unwrap_or_else(|e| panic!("fixture time {rfc3339:?}: {e}"))
}

pub fn k8s_time(rfc3339: &str) -> Time {
    let t = ts(rfc3339);
    let nanos = i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0);
    Time(
        Timestamp::new(t.timestamp(), nanos)
            .unwrap_or_else(|e| panic!("fixture time {rfc3339:?}: {e}")),
    )
}

fn uid(namespace: &str, name: &str) -> String {
    format!("uid-{namespace}-{name}")
}

fn controller_ref(namespace: &str, kind: &str, name: &str) -> OwnerReference {
    let api_version = match kind {
        "ReplicaSet" | "Deployment" | "StatefulSet" | "DaemonSet" => "apps/v1",
        "Job" | "CronJob" => "batch/v1",
        "Rollout" => "argoproj.io/v1alpha1",
        _ => "v1",
    };
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid(namespace, name),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn mk_meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        uid: Some(uid(namespace.unwrap_or(""), name)),
        creation_timestamp: Some(k8s_time(CREATED)),
        ..ObjectMeta::default()
    }
}

/// Metadata of an object of any owner kind, controlled by `owner` (kind, name) if given.
pub fn mk_owned(namespace: &str, name: &str, owner: Option<(&str, &str)>) -> ObjectMeta {
    let mut meta = mk_meta(Some(namespace), name);
    meta.owner_references = owner.map(|(kind, owner)| vec![controller_ref(namespace, kind, owner)]);
    meta
}

pub fn mk_namespace(name: &str) -> ObjectMeta {
    mk_meta(None, name)
}

pub fn mk_deployment(namespace: &str, name: &str) -> ObjectMeta {
    mk_owned(namespace, name, None)
}

pub fn mk_replicaset(namespace: &str, name: &str, deployment: &str) -> ObjectMeta {
    mk_owned(namespace, name, Some(("Deployment", deployment)))
}

pub fn mk_statefulset(namespace: &str, name: &str) -> ObjectMeta {
    mk_owned(namespace, name, None)
}

pub fn mk_daemonset(namespace: &str, name: &str) -> ObjectMeta {
    mk_owned(namespace, name, None)
}

pub fn mk_cronjob(namespace: &str, name: &str) -> ObjectMeta {
    mk_owned(namespace, name, None)
}

pub fn mk_job(namespace: &str, name: &str, cronjob: Option<&str>) -> ObjectMeta {
    mk_owned(namespace, name, cronjob.map(|c| ("CronJob", c)))
}

/// A running pod with these IPs (none: not yet scheduled).
pub fn mk_pod(namespace: &str, name: &str, ips: &[&str]) -> Pod {
    Pod {
        metadata: mk_meta(Some(namespace), name),
        spec: Some(PodSpec {
            containers: vec![Container { name: "main".to_owned(), ..Container::default() }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".to_owned()),
            pod_ip: ips.first().map(|ip| (*ip).to_owned()),
            pod_ips: Some(ips.iter().map(|ip| PodIP { ip: (*ip).to_owned() }).collect()),
            start_time: Some(k8s_time(CREATED)),
            ..PodStatus::default()
        }),
    }
}

pub trait PodBuilder: Sized {
    /// Controlled by the owner of this kind and name.
    fn owned_by(self, kind: &str, name: &str) -> Self;
    fn labelled(self, key: &str, value: &str) -> Self;
    fn annotated(self, key: &str, value: &str) -> Self;
    fn with_uid(self, uid: &str) -> Self;
    /// Created and started at this time.
    fn started_at(self, rfc3339: &str) -> Self;
    /// Deletion requested, to take effect at this time.
    fn deleting_at(self, rfc3339: &str) -> Self;
    /// Completed (`Succeeded`) at this time.
    fn succeeded_at(self, rfc3339: &str) -> Self;
    fn on_node(self, node: &str) -> Self;
    /// `hostNetwork: true`, listening on these container ports.
    fn host_network(self, ports: &[u16]) -> Self;
    /// A container port published on the node as this `hostPort`.
    fn host_port(self, port: u16) -> Self;
    /// As Istio's sidecar injector leaves it: an `istio-proxy` container, the
    /// `sidecar.istio.io/status` annotation and the `security.istio.io/tlsMode` label.
    fn with_istio_sidecar(self) -> Self;
}

impl PodBuilder for Pod {
    fn owned_by(mut self, kind: &str, name: &str) -> Self {
        let namespace = self.metadata.namespace.clone().unwrap_or_default();
        self.metadata.owner_references = Some(vec![controller_ref(&namespace, kind, name)]);
        self
    }

    fn labelled(mut self, key: &str, value: &str) -> Self {
        self.metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    fn annotated(mut self, key: &str, value: &str) -> Self {
        self.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    fn with_uid(mut self, uid: &str) -> Self {
        self.metadata.uid = Some(uid.to_owned());
        self
    }

    fn started_at(mut self, rfc3339: &str) -> Self {
        self.metadata.creation_timestamp = Some(k8s_time(rfc3339));
        self.status.get_or_insert_with(PodStatus::default).start_time = Some(k8s_time(rfc3339));
        self
    }

    fn deleting_at(mut self, rfc3339: &str) -> Self {
        self.metadata.deletion_timestamp = Some(k8s_time(rfc3339));
        self
    }

    fn succeeded_at(mut self, rfc3339: &str) -> Self {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateTerminated, ContainerStatus,
        };
        let status = self.status.get_or_insert_with(PodStatus::default);
        status.phase = Some("Succeeded".to_owned());
        status.container_statuses = Some(vec![ContainerStatus {
            name: "main".to_owned(),
            state: Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 0,
                    finished_at: Some(k8s_time(rfc3339)),
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }]);
        self
    }

    fn on_node(mut self, node: &str) -> Self {
        self.spec.get_or_insert_with(PodSpec::default).node_name = Some(node.to_owned());
        self
    }

    fn host_network(mut self, ports: &[u16]) -> Self {
        let spec = self.spec.get_or_insert_with(PodSpec::default);
        spec.host_network = Some(true);
        add_ports(
            spec,
            ports.iter().map(|p| ContainerPort {
                container_port: i32::from(*p),
                ..ContainerPort::default()
            }),
        );
        self
    }

    fn host_port(mut self, port: u16) -> Self {
        let spec = self.spec.get_or_insert_with(PodSpec::default);
        add_ports(
            spec,
            std::iter::once(ContainerPort {
                container_port: 8080,
                host_port: Some(i32::from(port)),
                ..ContainerPort::default()
            }),
        );
        self
    }

    fn with_istio_sidecar(mut self) -> Self {
        let spec = self.spec.get_or_insert_with(PodSpec::default);
        spec.containers.push(Container { name: "istio-proxy".to_owned(), ..Container::default() });
        self.annotated(
            "sidecar.istio.io/status",
            r#"{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy"],"revision":"default"}"#,
        )
        .labelled("security.istio.io/tlsMode", "istio")
    }
}

fn add_ports(spec: &mut PodSpec, ports: impl Iterator<Item = ContainerPort>) {
    if spec.containers.is_empty() {
        spec.containers.push(Container { name: "main".to_owned(), ..Container::default() });
    }
    spec.containers[0].ports.get_or_insert_with(Vec::new).extend(ports);
}

/// A ClusterIP Service (no IPs: headless) selecting pods by these labels.
pub fn mk_service(
    namespace: &str,
    name: &str,
    cluster_ips: &[&str],
    selector: &[(&str, &str)],
) -> Service {
    Service {
        metadata: mk_meta(Some(namespace), name),
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ips.first().copied().unwrap_or("None").to_owned()),
            cluster_ips: Some(if cluster_ips.is_empty() {
                vec!["None".to_owned()]
            } else {
                cluster_ips.iter().map(|ip| (*ip).to_owned()).collect()
            }),
            selector: (!selector.is_empty()).then(|| {
                selector.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
            }),
            type_: Some("ClusterIP".to_owned()),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

pub trait ServiceBuilder: Sized {
    /// `type: LoadBalancer` with these ingress IPs or hostnames.
    fn load_balancer(self, ingress: &[&str]) -> Self;
    fn external_ips(self, ips: &[&str]) -> Self;
    /// TCP ports, each with its node port if it has one.
    fn ports(self, ports: &[(u16, Option<u16>)]) -> Self;
}

impl ServiceBuilder for Service {
    fn load_balancer(mut self, ingress: &[&str]) -> Self {
        self.spec.get_or_insert_with(ServiceSpec::default).type_ = Some("LoadBalancer".to_owned());
        let ingress = ingress.iter().map(|a| load_balancer_ingress(a)).collect();
        self.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus { ingress: Some(ingress) }),
            ..ServiceStatus::default()
        });
        self
    }

    fn external_ips(mut self, ips: &[&str]) -> Self {
        self.spec.get_or_insert_with(ServiceSpec::default).external_ips =
            Some(ips.iter().map(|ip| (*ip).to_owned()).collect());
        self
    }

    fn ports(mut self, ports: &[(u16, Option<u16>)]) -> Self {
        let ports = ports
            .iter()
            .map(|&(port, node_port)| k8s_openapi::api::core::v1::ServicePort {
                port: i32::from(port),
                node_port: node_port.map(i32::from),
                protocol: Some("TCP".to_owned()),
                ..Default::default()
            })
            .collect();
        self.spec.get_or_insert_with(ServiceSpec::default).ports = Some(ports);
        self
    }
}

fn load_balancer_ingress(address: &str) -> LoadBalancerIngress {
    if address.parse::<std::net::IpAddr>().is_ok() {
        LoadBalancerIngress { ip: Some(address.to_owned()), ..LoadBalancerIngress::default() }
    } else {
        LoadBalancerIngress { hostname: Some(address.to_owned()), ..LoadBalancerIngress::default() }
    }
}

/// An EndpointSlice of `service` with these (address, pod name) endpoints.
pub fn mk_endpoint_slice(
    namespace: &str,
    service: &str,
    name: &str,
    endpoints: &[(&str, Option<&str>)],
) -> EndpointSlice {
    let mut metadata = mk_meta(Some(namespace), name);
    metadata.labels =
        Some(BTreeMap::from([("kubernetes.io/service-name".to_owned(), service.to_owned())]));
    let ipv6 = endpoints.first().is_some_and(|(ip, _)| ip.contains(':'));
    EndpointSlice {
        metadata,
        address_type: if ipv6 { "IPv6" } else { "IPv4" }.to_owned(),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(ip, pod)| Endpoint {
                    addresses: vec![(*ip).to_owned()],
                    target_ref: pod.map(|p| ObjectReference {
                        kind: Some("Pod".to_owned()),
                        namespace: Some(namespace.to_owned()),
                        name: Some(p.to_owned()),
                        uid: Some(uid(namespace, p)),
                        ..ObjectReference::default()
                    }),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: None,
    }
}

/// A node with these addresses (`InternalIP`).
pub fn mk_node(name: &str, ips: &[&str]) -> Node {
    Node {
        metadata: mk_meta(None, name),
        spec: None,
        status: Some(NodeStatus {
            addresses: Some(
                ips.iter()
                    .map(|ip| NodeAddress {
                        address: (*ip).to_owned(),
                        type_: "InternalIP".to_owned(),
                    })
                    .collect(),
            ),
            ..NodeStatus::default()
        }),
    }
}

/// An Ingress with these (host, backend Service) rules.
pub fn mk_ingress(namespace: &str, name: &str, rules: &[(Option<&str>, &str)]) -> Ingress {
    let backend = |service: &str| IngressBackend {
        service: Some(IngressServiceBackend { name: service.to_owned(), port: None }),
        resource: None,
    };
    Ingress {
        metadata: mk_meta(Some(namespace), name),
        spec: Some(IngressSpec {
            rules: Some(
                rules
                    .iter()
                    .map(|(host, service)| IngressRule {
                        host: host.map(str::to_owned),
                        http: Some(HTTPIngressRuleValue {
                            paths: vec![HTTPIngressPath {
                                backend: backend(service),
                                path: Some("/".to_owned()),
                                path_type: "Prefix".to_owned(),
                            }],
                        }),
                    })
                    .collect(),
            ),
            ..IngressSpec::default()
        }),
        status: None,
    }
}

pub trait IngressBuilder: Sized {
    /// Load balancer ingress IPs or hostnames.
    fn load_balancer(self, ingress: &[&str]) -> Self;
}

impl IngressBuilder for Ingress {
    fn load_balancer(mut self, ingress: &[&str]) -> Self {
        let ingress = ingress.iter().map(|a| {
            let lb = load_balancer_ingress(a);
            IngressLoadBalancerIngress { ip: lb.ip, hostname: lb.hostname, ports: None }
        });
        self.status = Some(IngressStatus {
            load_balancer: Some(IngressLoadBalancerStatus { ingress: Some(ingress.collect()) }),
        });
        self
    }
}
