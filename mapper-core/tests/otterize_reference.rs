//! Otterize's own test cases (and Apache Kafka's, Istio's and Envoy's), run through this
//! project's public functions: the index and resolver, the mapper, the Kafka authorizer-line
//! parser and the Istio metrics reader.
//!
//! The cases are read at run time from `../shared/reference/otterize/` (see its README: each
//! file's source, commit and licence); nothing of them is copied here. Each test names the
//! fixture case it runs. Where Otterize's expected result is wrong, the test asserts what is
//! right and says why in a comment starting `DIFFERENCE:`; README.md ("Differences from
//! Otterize's own test cases") lists them. The ClientIntents export cases are in
//! `intentmap/tests/otterize_export.rs`.

use std::collections::BTreeSet;
mod otterize_common;

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use mapper_core::fixtures::*;
use mapper_core::kafka::{crd_operation, parse_authorizer_line, AuthorizerLine};
use mapper_core::{
    read_metrics, DnsMemory, DnsMemoryConfig, EdgeFilter, Index, KafkaBroker, LabelledPod, Mapper,
    Resolution, SidecarScrape,
};
use model::observation::{DnsAnswer, ObservationBatch, PodHint, TcpConnection};
use model::{Edge, Target};
use otterize_common::*;
use serde_json::Value;

// === Reading the fixtures ===

fn scenario(id: &str) -> Value {
    let all = fixture_json("resolution/otterize-resolution-scenarios.json");
    all["scenarios"]
        .as_array()
        .expect("scenarios")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no scenario {id} in the fixture"))
        .clone()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("address {s:?}: {e}"))
}

/// The namespace Otterize's tests call `<test-ns>`.
const NS: &str = "test-ns";

// === Otterize's test base, as watchers would deliver it ===

/// `default/kubernetes`, as every cluster has it (ClusterIP 10.0.0.1, the API server at
/// 172.18.0.2:6443).
fn api_server(mapper: &mut Mapper) {
    mapper.index.apply_meta("Namespace", &mk_namespace("default"));
    mapper.index.apply(&mk_service("default", "kubernetes", &["10.0.0.1"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        "default",
        "kubernetes",
        "kubernetes",
        &[("172.18.0.2", None)],
    ));
}

/// The objects of a scenario's `setup` list: Deployments (pod → ReplicaSet → Deployment),
/// DaemonSets, bare pods, each with its Service and EndpointSlice when it has one. `ips`
/// rewrites addresses (scenarios that say "as X with other IPs").
fn build(mapper: &mut Mapper, setup: &Value, ips: &dyn Fn(&str) -> String) {
    for object in setup.as_array().expect("setup list") {
        let Some(kind) = object["kind"].as_str() else { continue };
        let name = str_of(&object["name"]);
        let mut pod_names = Vec::new();
        for pod in object["pods"].as_array().expect("pods") {
            let pod_name = str_of(&pod["name"]);
            let address = ips(str_of(&pod["ip"]));
            let mut built = mk_pod(NS, pod_name, &[&address]);
            match kind {
                "Deployment" => {
                    let replicaset = str_of(&object["owner_chain"])
                        .split("ReplicaSet ")
                        .nth(1)
                        .and_then(|r| r.split(' ').next())
                        .expect("a ReplicaSet in the owner chain")
                        .to_owned();
                    mapper.index.apply_meta("Deployment", &mk_deployment(NS, name));
                    mapper.index.apply_meta("ReplicaSet", &mk_replicaset(NS, &replicaset, name));
                    built = built.owned_by("ReplicaSet", &replicaset);
                }
                "DaemonSet" => {
                    mapper.index.apply_meta("DaemonSet", &mk_daemonset(NS, name));
                    built = built.owned_by("DaemonSet", name);
                }
                "Pod" => {}
                other => panic!("setup kind {other}"),
            }
            mapper.index.apply(&built);
            pod_names.push((address, pod_name.to_owned()));
        }
        if let Some(service) = object.get("service") {
            let service_name = str_of(&service["name"]);
            let cluster_ip = ips(str_of(&service["clusterIP"]));
            mapper.index.apply(&mk_service(NS, service_name, &[&cluster_ip], &[]));
            let endpoints: Vec<(&str, Option<&str>)> =
                pod_names.iter().map(|(a, p)| (a.as_str(), Some(p.as_str()))).collect();
            mapper.index.apply(&mk_endpoint_slice(
                NS,
                service_name,
                &format!("{service_name}-1"),
                &endpoints,
            ));
        }
    }
}

fn tcp(src: &str, dst: &str, port: u16, when: DateTime<Utc>) -> TcpConnection {
    TcpConnection::between(ip(src), ip(dst), port, when)
}

fn dns(client: &str, name: &str, addresses: &[&str], when: DateTime<Utc>) -> DnsAnswer {
    DnsAnswer {
        client_ip: ip(client),
        name: name.to_owned(),
        cnames: vec![],
        addresses: addresses.iter().map(|a| ip(a)).collect(),
        ttl_seconds: 60,
        at: when,
    }
}

/// A scenario's `input` as the node agent would send it: `report` DNS → DNS answers (a lookup
/// of a Service is a call to it), otherwise TCP connections (port 80). `srcHostname` becomes
/// the pod hint (namespace and name) of the TCP line; DNS answers carry no hint, so a
/// scenario with one is sent as TCP.
fn send(mapper: &mut Mapper, input: &Value, as_dns: bool, when: DateTime<Utc>) {
    let mut batch = ObservationBatch::default();
    for source in input.as_array().expect("input list") {
        let src = str_of(&source["srcIp"]);
        let hostname = source.get("srcHostname").and_then(Value::as_str);
        for destination in source["destinations"].as_array().expect("destinations") {
            let destination = str_of(destination).replace("<test-ns>", NS);
            match destination.strip_prefix("<ClusterIP of default/kubernetes>") {
                Some(_) => batch.tcp.push(tcp(src, "10.0.0.1", 443, when)),
                None if as_dns && hostname.is_none() => {
                    batch.dns.push(dns(src, &destination, &[], when))
                }
                None => {
                    let address = match destination.parse::<IpAddr>() {
                        Ok(_) => destination.clone(),
                        Err(_) => service_ip(mapper, &destination),
                    };
                    let mut line = tcp(src, &address, 80, when);
                    line.pod = hostname.map(|h| PodHint {
                        uid: None,
                        namespace: Some(NS.to_owned()),
                        name: Some(h.to_owned()),
                    });
                    batch.tcp.push(line);
                }
            }
        }
    }
    mapper.observe(&batch, when + TimeDelta::seconds(30));
}

/// The ClusterIP behind `svc.ns.svc.cluster.local` (the scenarios' Services are 10.0.0.x).
fn service_ip(mapper: &Mapper, name: &str) -> String {
    let service = name.split('.').next().expect("a name");
    for last in 1..=40 {
        let address = format!("10.0.0.{last}");
        if let Resolution::Service { service: key, .. } =
            mapper.index.resolve_address(ip(&address), at(0), None)
        {
            if &*key.name == service {
                return address;
            }
        }
    }
    panic!("no Service {service}")
}

/// What an edge says, as Otterize's expected intents do: client namespace/name (kind), server
/// namespace/name.
fn intents_of(edges: &[Edge]) -> BTreeSet<(String, String, String)> {
    edges
        .iter()
        .map(|e| {
            let server = match &e.target {
                Target::Kubernetes(w) | Target::Kafka(w) => format!("{}/{}", w.namespace, w.name),
                Target::Service(s) => format!("{}/{}", s.namespace, s.name),
                other => format!("{other:?}"),
            };
            (
                format!("{}/{}", e.client.namespace, e.client.name),
                e.client.kind.clone().unwrap_or_default(),
                server,
            )
        })
        .collect()
}

/// Otterize's `expected_intents` in the same form (`podOwnerKind` `apps/v1 Deployment` is kind
/// `Deployment`).
fn expected_intents(expected: &Value) -> BTreeSet<(String, String, String)> {
    expected
        .as_array()
        .expect("expected_intents list")
        .iter()
        .map(|i| {
            let ns = |v: &Value| str_of(v).replace("<test-ns>", NS);
            let kind = i["client"]["podOwnerKind"]
                .as_str()
                .and_then(|k| k.rsplit(' ').next())
                .unwrap_or_default()
                .to_owned();
            (
                format!("{}/{}", ns(&i["client"]["namespace"]), str_of(&i["client"]["name"])),
                kind,
                format!("{}/{}", ns(&i["server"]["namespace"]), str_of(&i["server"]["name"])),
            )
        })
        .collect()
}

fn same_ips(address: &str) -> String {
    address.to_owned()
}

/// Runs a scenario whose setup, input and expected intents are all data.
fn run_scenario(id: &str, ips: &dyn Fn(&str) -> String) -> Mapper {
    let case = scenario(id);
    let mut mapper = Mapper::default();
    api_server(&mut mapper);
    build(&mut mapper, &case["setup"], ips);
    let as_dns = str_of(&case["report"]).starts_with("DNS");
    send(&mut mapper, &case["input"], as_dns, at(60));
    assert_eq!(
        intents_of(&mapper.snapshot()),
        expected_intents(&case["expected_intents"]),
        "{id}: {}",
        case["note"]
    );
    mapper
}

// === Resolution: src/mapper/pkg/resolvers/resolver_test.go ===

#[test]
fn report_capture_results_names_clients_by_root_owner_and_servers_behind_services() {
    let mapper = run_scenario("TestReportCaptureResults", &same_ips);
    assert_eq!(mapper.stats().dns_cluster_answers, 4);
}

#[test]
fn report_capture_results_hostname_mismatch_is_discarded() {
    let mapper = run_scenario("TestReportCaptureResultsHostnameMismatch", &same_ips);
    // The node named pod5, the address was pod4's: neither is guessed (issue 18, item 8).
    assert_eq!(mapper.stats().unknown_hinted_pods, 1);
}

#[test]
fn report_capture_results_pod_deletion_ignores_a_pod_being_deleted() {
    let case = scenario("TestReportCaptureResultsPodDeletion");
    let mut mapper = Mapper::default();
    api_server(&mut mapper);
    build(&mut mapper, &case["setup"], &same_ips);
    assert!(str_of(&case["setup"][4]["action"]).contains("deletionTimestamp set"));
    // pod4 is still listed (a finalizer holds it), its deletion took effect 30 s after creation,
    // before the lookups (a minute after).
    mapper.index.apply(&mk_pod(NS, "pod4", &["1.1.1.4"]).deleting_at("2026-01-01T00:00:30Z"));
    let input = scenario("TestReportCaptureResults")["input"].clone();
    send(&mut mapper, &input, true, at(60));
    assert_eq!(intents_of(&mapper.snapshot()), expected_intents(&case["expected_intents"]));
    assert_eq!(mapper.stats().unknown_clients, 1, "pod4's address is no one's after its deletion");
}

#[test]
fn report_capture_results_ip_reuse_by_two_running_pods_names_neither() {
    let case = scenario("TestReportCaptureResultsIPReuse");
    let mut mapper = Mapper::default();
    api_server(&mut mapper);
    build(&mut mapper, &case["setup"], &same_ips);
    let mut input = scenario("TestReportCaptureResults")["input"].clone();
    assert!(str_of(&case["input"]).contains("1.1.1.5 -> svc-service2"));
    input.as_array_mut().unwrap().push(serde_json::json!({
        "srcIp": "1.1.1.5", "destinations": ["svc-service2.<test-ns>.svc.cluster.local"]
    }));
    send(&mut mapper, &input, true, at(60));
    assert_eq!(intents_of(&mapper.snapshot()), expected_intents(&case["expected_intents"]));
    assert_eq!(mapper.stats().contested_addresses, 1);
    // As a target too: a connection to 1.1.1.5 names neither DaemonSet.
    mapper.observe(
        &ObservationBatch {
            tcp: vec![tcp("1.1.1.1", "1.1.1.5", 80, at(61))],
            ..Default::default()
        },
        at(90),
    );
    assert_eq!(mapper.stats().contested_addresses, 2);
    assert_eq!(mapper.snapshot().len(), 4);
}

#[test]
fn report_tcp_capture_results_resolve_cluster_ips_to_the_workloads_behind() {
    run_scenario("TestReportTCPCaptureResults", &same_ips);
}

#[test]
fn socket_scan_results_are_the_tcp_case_with_other_addresses() {
    let case = scenario("TestSocketScanResults");
    assert!(str_of(&case["setup"]).contains("1.1.2.x and ClusterIPs 10.0.0.22-24"));
    let renumber = |a: &str| match a {
        "10.0.0.16" => "10.0.0.22".to_owned(),
        "10.0.0.17" => "10.0.0.23".to_owned(),
        "10.0.0.18" => "10.0.0.24".to_owned(),
        other => other.replace("1.1.1.", "1.1.2."),
    };
    let tcp_case = scenario("TestReportTCPCaptureResults");
    let mut mapper = Mapper::default();
    api_server(&mut mapper);
    build(&mut mapper, &tcp_case["setup"], &renumber);
    let mut input = tcp_case["input"].clone();
    for source in input.as_array_mut().unwrap() {
        source["srcIp"] = renumber(str_of(&source["srcIp"])).into();
        for d in source["destinations"].as_array_mut().unwrap() {
            *d = renumber(str_of(d)).into();
        }
    }
    send(&mut mapper, &input, false, at(60));
    assert_eq!(intents_of(&mapper.snapshot()), expected_intents(&tcp_case["expected_intents"]));
}

#[test]
fn report_capture_results_ignore_old_packet() {
    let case = scenario("TestReportCaptureResultsIgnoreOldPacket");
    let mut mapper = Mapper::default();
    api_server(&mut mapper);
    build(&mut mapper, &case["setup"], &same_ips);
    // Seen a minute before the pods existed (the name is not even a Service: both guards).
    send(&mut mapper, &case["input"], true, at(-60));
    let svc = serde_json::json!([{"srcIp": "1.1.1.1", "destinations": ["10.0.0.17"]}]);
    send(&mut mapper, &svc, false, at(-60));
    assert!(mapper.snapshot().is_empty(), "{:?}", mapper.snapshot());
    assert_eq!(mapper.stats().unknown_clients, 1, "the address was no one's yet");
}

#[test]
fn intents_to_the_api_server_by_dns_and_by_socket_scan() {
    let mapper = run_scenario("TestIntentsToApiServerDNS", &same_ips);
    let edge = &mapper.snapshot()[0];
    assert!(matches!(&edge.target, Target::Service(s) if s.name == "kubernetes"));
    let case = scenario("TestIntentsToApiServerSocketScan");
    assert_eq!(case["expected_intents"], "same as TestIntentsToApiServerDNS");
    let mut mapper = Mapper::default();
    api_server(&mut mapper);
    build(&mut mapper, &case["setup"], &same_ips);
    send(&mut mapper, &case["input"], false, at(60));
    assert_eq!(
        intents_of(&mapper.snapshot()),
        expected_intents(&scenario("TestIntentsToApiServerDNS")["expected_intents"])
    );
}

#[test]
fn intents_filter_by_server_keeps_every_call_of_the_clients_that_call_it() {
    let case = scenario("TestIntentsFilterByServer");
    assert!(str_of(&case["expected_intents"])
        .contains("ONLY daemonset-service3 -> deployment-service1 and daemonset-service3 -> deployment-service2"));
    let mapper = run_scenario("TestReportCaptureResults", &same_ips);
    let filter = EdgeFilter {
        namespaces: vec![NS.to_owned()],
        server: Some(format!("deployment-service1.{NS}").parse().unwrap()),
        ..EdgeFilter::default()
    };
    let kept = filter.apply(&mapper.snapshot(), &mapper.index);
    let expected: BTreeSet<_> = [
        ("test-ns/daemonset-service3", "test-ns/deployment-service1"),
        ("test-ns/daemonset-service3", "test-ns/deployment-service2"),
    ]
    .into_iter()
    .map(|(c, s)| (c.to_owned(), "DaemonSet".to_owned(), s.to_owned()))
    .collect();
    assert_eq!(intents_of(&kept), expected, "{}", case["note"]);
}

#[test]
fn host_network_pods_behind_a_service_and_as_clients() {
    // TestResolveOtterizeIdentityIgnoreHostNetworkPods. DIFFERENCE: Otterize resolves a
    // destination by IP → pod and so cannot tell which hostNetwork pod a node address is; it
    // names none. Here a Service's backends come from its EndpointSlices' pod references, which
    // name the pod whatever its address, so the Service's hostNetwork pod is its backend.
    let case = scenario("TestResolveOtterizeIdentityIgnoreHostNetworkPods");
    assert!(str_of(&case["setup"]).contains("hostNetwork=true"));
    let mut mapper = Mapper::default();
    mapper.index.apply(&mk_node("node-1", &["1.1.1.3"]));
    mapper.index.apply(&mk_pod(NS, "pod3", &["1.1.1.3"]).on_node("node-1").host_network(&[8080]));
    mapper.index.apply(&mk_service(NS, "svc-test-service", &["10.0.0.10"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        NS,
        "svc-test-service",
        "svc-test-service-1",
        &[("1.1.1.3", Some("pod3"))],
    ));
    match mapper.index.resolve_name(&format!("svc-test-service.{NS}.svc.cluster.local")) {
        Some(Resolution::Service { backends, .. }) => {
            assert_eq!(backends.iter().map(|w| &*w.name).collect::<Vec<_>>(), ["pod3"])
        }
        other => panic!("{other:?}"),
    }
    // By address alone a node address names its node (no port: no hostNetwork pod's).
    assert!(matches!(
        mapper.index.resolve_address(ip("1.1.1.3"), at(60), None),
        Resolution::Workload { workload, .. } if &*workload.name == "node-1"
    ));

    // TestTCPResultsFromHostNetworkPodsIgnored: a hostNetwork pod (its address no node's the
    // index knows) calling a LoadBalancer's external address: no intent, no incoming traffic.
    let case = scenario("TestTCPResultsFromHostNetworkPodsIgnored");
    let mut mapper = Mapper::default();
    mapper.index.apply(&mk_pod(NS, "hostnet", &["1.1.1.3"]).host_network(&[9090]));
    deploy_with_lb(&mut mapper);
    let input = &case["input"][0];
    let dst = &input["destinations"][0];
    let line = tcp(
        str_of(&input["srcIp"]),
        str_of(&dst["destinationIP"]),
        u16::try_from(dst["destinationPort"].as_u64().unwrap()).unwrap(),
        at(60),
    );
    mapper.observe(&ObservationBatch { tcp: vec![line], ..Default::default() }, at(90));
    assert_eq!(case["expected_intents"], serde_json::json!([]));
    assert!(mapper.snapshot().is_empty(), "{:?}", mapper.snapshot());
    assert_eq!(mapper.stats().unknown_clients, 1);
}

fn deploy_with_lb(mapper: &mut Mapper) {
    mapper.index.apply_meta("Deployment", &mk_deployment(NS, "deployment-service1"));
    mapper
        .index
        .apply_meta("ReplicaSet", &mk_replicaset(NS, "replicaset-service1", "deployment-service1"));
    mapper.index.apply(
        &mk_pod(NS, "service1-0", &["1.1.1.1"]).owned_by("ReplicaSet", "replicaset-service1"),
    );
    mapper
        .index
        .apply(&mk_service(NS, "svc-service1", &["10.0.0.16"], &[]).load_balancer(&["34.10.0.12"]));
    mapper.index.apply(&mk_endpoint_slice(
        NS,
        "svc-service1",
        "svc-service1-1",
        &[("1.1.1.1", Some("service1-0"))],
    ));
}

/// A Deployment `name` with one pod at `address` (through a ReplicaSet).
fn deploy(mapper: &mut Mapper, name: &str, pod: &str, address: &str) {
    let replicaset = format!("replicaset-{name}");
    mapper.index.apply_meta("Deployment", &mk_deployment(NS, name));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset(NS, &replicaset, name));
    mapper.index.apply(&mk_pod(NS, pod, &[address]).owned_by("ReplicaSet", &replicaset));
}

#[test]
fn incoming_internet_traffic_is_recorded_on_the_workload_that_served_it() {
    // TestReportIncomingTraffic (a load balancer address two Services share, told apart by
    // port), TestTCPResultsFromExternalToPodSavedAsIncoming (straight to a pod's address) and
    // ...LoadBalancerServiceUsingNodeIpAndPortSavedAsIncoming (a node address and a node
    // port). Our node agents report the server's side (`accepted`); a source outside the
    // cluster becomes `internet → workload`, never a client workload, and ClientIntents (which
    // describe clients) leave it out. ...SaveIfDestinationNameRight/...SkipIfDestinationNameWrong
    // check a sniffed destination hostname against the pod: our agents report the accepting
    // socket itself, which has no hostname to get wrong.
    let mut mapper = Mapper::default();
    mapper.index.apply(&mk_node("node-1", &["192.168.0.10"]));
    deploy(&mut mapper, "deployment-service1", "service1-0", "1.1.1.1");
    deploy(&mut mapper, "deployment-service2", "service2-0", "1.1.1.2");
    deploy(&mut mapper, "deployment-coolz", "coolz-0", "1.1.1.3");
    for (service, cluster_ip, port, node_port, pod, address) in [
        ("svc-service1", "10.0.0.16", 9090, None, "service1-0", "1.1.1.1"),
        ("svc-service2", "10.0.0.17", 1337, None, "service2-0", "1.1.1.2"),
        ("svc-coolz", "10.0.0.10", 80, Some(30080), "coolz-0", "1.1.1.3"),
    ] {
        mapper.index.apply(
            &mk_service(NS, service, &[cluster_ip], &[])
                .load_balancer(&["34.10.0.12"])
                .ports(&[(port, node_port)]),
        );
        let slice = format!("{service}-1");
        mapper.index.apply(&mk_endpoint_slice(NS, service, &slice, &[(address, Some(pod))]));
    }
    let mut expected = BTreeSet::new();
    let mut lines = Vec::new();
    for id in [
        "TestReportIncomingTraffic",
        "TestTCPResultsFromExternalToPodSavedAsIncoming",
        "TestTCPResultsFromExternalToLoadBalancerServiceUsingNodeIpAndPortSavedAsIncoming",
    ] {
        let case = scenario(id);
        let input = &case["input"][0];
        let dst = &input["destinations"][0];
        let address = str_of(&dst["destinationIP"]).replace("<node InternalIP>", "192.168.0.10");
        let port = dst["destinationPort"].as_u64().unwrap_or(30080);
        let line = tcp(str_of(&input["srcIp"]), &address, port as u16, at(60));
        lines.push(TcpConnection { accepted: true, ..line });
        let incoming = &case["expected_incoming"][0];
        expected.insert((
            str_of(&incoming["server"]["name"]).to_owned(),
            str_of(&incoming["ip"]).to_owned(),
        ));
    }
    mapper.observe(&ObservationBatch { tcp: lines, ..Default::default() }, at(61));
    // Judged only once the index had time to learn of a new pod at the source address.
    assert!(mapper.snapshot().is_empty(), "{:?}", mapper.snapshot());
    assert_eq!(mapper.pending_incoming(), 3);
    mapper.settle_incoming(at(60) + mapper_core::INCOMING_SETTLE);
    let edges = mapper.snapshot();
    let seen: BTreeSet<(String, String)> = edges
        .iter()
        .map(|e| match &e.target {
            Target::Incoming(i) => (e.client.name.clone(), i.ips.join(",")),
            other => panic!("only incoming traffic expected, got {other:?}"),
        })
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(mapper.stats().incoming_connections, 3);
    assert_eq!(mapper.stats().unknown_clients, 0);
    assert!(model::client_intents(&edges, model::IntentsVersion::V2beta1).is_empty());
}

#[test]
fn observations_older_than_the_source_pod_are_dropped() {
    // TestResolveOtterizeIdentityFilterSrcDestinationsByCreationTimestamp: pod3 calls two
    // destinations, one seen a minute after its creation, one a minute before.
    let case = scenario("TestResolveOtterizeIdentityFilterSrcDestinationsByCreationTimestamp");
    assert_eq!(case["expected"], "source identity pod3; only target-on-time kept");
    let mut mapper = Mapper::default();
    mapper.index.apply(&mk_pod(NS, "pod3", &["1.1.1.3"]));
    let mut batch = ObservationBatch::default();
    for (destination, address) in case["input"][0]["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .zip(["203.0.113.1", "203.0.113.2"])
    {
        let when =
            if str_of(&destination["lastSeen"]).contains("+ 1min") { at(60) } else { at(-60) };
        let name = format!("{}.example.com", str_of(&destination["destination"]));
        batch.dns.push(dns("1.1.1.3", &name, &[address], when));
        batch.tcp.push(tcp("1.1.1.3", address, 443, when));
    }
    mapper.observe(&batch, at(90));
    let edges = mapper.snapshot();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0].client.name, "pod3");
    match &edges[0].target {
        Target::Internet(i) => assert_eq!(i.domains, ["target-on-time.example.com"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_host_network_pod_on_the_api_servers_address_is_not_the_control_plane() {
    // TestDiscoverInternalSrcIdentityIgnoreControlPlaneIfBackedByHostNetworkPod.
    let case =
        scenario("TestDiscoverInternalSrcIdentityIgnoreControlPlaneIfBackedByHostNetworkPod");
    assert!(str_of(&case["expected"]).contains("not 'control plane'"));
    let mut mapper = Mapper::default();
    api_server(&mut mapper);
    mapper.index.apply(&mk_pod("kube-system", "etcd", &["172.18.0.2"]).host_network(&[2379]));
    let batch = ObservationBatch {
        tcp: vec![tcp("172.18.0.2", "8.8.8.8", 53, at(60))],
        ..Default::default()
    };
    mapper.observe(&batch, at(90));
    assert!(mapper.snapshot().is_empty(), "{:?}", mapper.snapshot());
    assert_eq!(mapper.stats().unknown_clients, 1);
}

#[test]
fn a_pod_address_names_the_pod_that_held_it_then_however_young_the_pod() {
    // TestReportTCPResultsIgnoreTargetsWithShortUptime. DIFFERENCE: Otterize distrusts a
    // destination pod younger than 5 minutes (its IP → pod map may still name the address's
    // previous pod). Here every address keeps a history of which pod held it when, so a
    // connection is named by the pod that held the address at that moment, a minute-old pod
    // included; step 1 records an intent where Otterize records none. Steps 2 and 3 agree.
    let case = scenario("TestReportTCPResultsIgnoreTargetsWithShortUptime");
    let steps = case["steps"].as_array().unwrap();
    let expected = [1, 1, 1];
    for (step, (description, expected)) in steps.iter().zip(expected).enumerate() {
        let mut mapper = Mapper::default();
        mapper.index.apply(&mk_pod(NS, "pod3", &["1.1.1.3"]));
        mapper.index.apply_meta("Deployment", &mk_deployment(NS, "deployment-service1"));
        mapper.index.apply_meta("ReplicaSet", &mk_replicaset(NS, "rs-1", "deployment-service1"));
        mapper.index.apply(&mk_pod(NS, "service1-0", &["1.1.1.2"]).owned_by("ReplicaSet", "rs-1"));
        mapper.index.apply(&mk_service(NS, "svc-service1", &["10.0.0.37"], &[]));
        mapper.index.apply(&mk_endpoint_slice(
            NS,
            "svc-service1",
            "s-1",
            &[("1.1.1.2", Some("service1-0"))],
        ));
        let input = str_of(&description["input"]);
        let dst = if input.contains("10.0.0.37") { "10.0.0.37" } else { "1.1.1.2" };
        let when = if input.contains("5min - 1min") { at(240) } else { at(360) };
        mapper.observe(
            &ObservationBatch { tcp: vec![tcp("1.1.1.3", dst, 80, when)], ..Default::default() },
            at(400),
        );
        let edges = mapper.snapshot();
        assert_eq!(edges.len(), expected, "step {step}: {input}: {edges:?}");
        assert!(
            matches!(&edges[0].target, Target::Kubernetes(w) if w.name == "deployment-service1")
        );
        if step == 0 {
            assert_eq!(description["expected_new_intents"], 0, "Otterize's (documented) answer");
        }
    }
}

// === kubefinder_test.go ===

#[test]
fn kubefinder_resolves_pod_addresses_the_api_server_and_service_names() {
    let mut mapper = Mapper::default();
    // TestResolveIpToPod: before the pods exist, nothing; then the pod.
    assert!(matches!(
        mapper.index.resolve_address(ip("1.1.1.1"), at(60), None),
        Resolution::External(_)
    ));
    mapper.index.apply(&mk_pod(NS, "some-pod", &["2.2.2.2"]));
    mapper.index.apply(&mk_pod(NS, "test-pod", &["1.1.1.1"]));
    mapper.index.apply(&mk_pod(NS, "pod-with-no-ip", &[]));
    assert!(matches!(
        mapper.index.resolve_address(ip("1.1.1.1"), at(60), None),
        Resolution::Workload { workload, .. } if &*workload.name == "test-pod"
    ));

    // TestResolveIpToControlPlane(+Subnet): the first address of default/kubernetes's endpoints
    // is the API server. DIFFERENCE: Otterize optionally widens that to a prefix (a /28); here
    // only the endpoints' own addresses are the API server: another host in the same /28 (a
    // node, a load balancer) would be misnamed.
    api_server(&mut mapper);
    assert_eq!(mapper.index.resolve_address(ip("172.18.0.2"), at(60), None), Resolution::ApiServer);
    assert!(matches!(
        mapper.index.resolve_address(ip("172.18.0.3"), at(60), None),
        Resolution::External(_)
    ));
    let case = scenario("kubefinder.TestResolveIpToControlPlane(+Subnet)");
    assert!(str_of(&case["expected"]).contains("'kubernetes' in 'default'"));

    // TestResolveServiceAddressToIps.
    let case = scenario("kubefinder.TestResolveServiceAddressToIps");
    let name = |n: &str| n.replace("<ns>", NS);
    assert_eq!(mapper.index.resolve_name("www.google.com"), None);
    let svc1 = name("svc-service1.<ns>.svc.cluster.local");
    assert_eq!(mapper.index.resolve_name(&svc1), None, "before it exists");
    for (service, ip, pods) in [
        ("svc-service0", "10.0.0.10", &["1.1.1.1"][..]),
        ("svc-service1", "10.0.0.11", &["1.1.1.2", "1.1.1.3"][..]),
    ] {
        let deployment = service.replace("svc-", "deployment-");
        mapper.index.apply_meta("Deployment", &mk_deployment(NS, &deployment));
        mapper
            .index
            .apply_meta("ReplicaSet", &mk_replicaset(NS, &format!("{deployment}-rs"), &deployment));
        let mut endpoints = Vec::new();
        for (i, address) in pods.iter().enumerate() {
            let pod = format!("{deployment}-{i}");
            mapper.index.apply(
                &mk_pod(NS, &pod, &[address]).owned_by("ReplicaSet", &format!("{deployment}-rs")),
            );
            endpoints.push((*address, pod));
        }
        mapper.index.apply(&mk_service(NS, service, &[ip], &[]));
        let endpoints: Vec<(&str, Option<&str>)> =
            endpoints.iter().map(|(a, p)| (*a, Some(p.as_str()))).collect();
        mapper.index.apply(&mk_endpoint_slice(NS, service, &format!("{service}-1"), &endpoints));
    }
    let backends = |n: &str| match mapper.index.resolve_name(n) {
        Some(Resolution::Service { service, backends }) => (
            service.name.to_string(),
            backends.iter().map(|w| w.name.to_string()).collect::<Vec<_>>(),
        ),
        other => panic!("{n}: {other:?}"),
    };
    let expected = ("svc-service1".to_owned(), vec!["deployment-service1".to_owned()]);
    assert_eq!(backends(&svc1), expected);
    // The hostname-prefixed form: no pod 4.4.4.4, so the Service (issue 18, item 2).
    let prefixed = name("4-4-4-4.svc-service1.<ns>.svc.cluster.local");
    assert!(case["expected"].get(prefixed.replace(NS, "<ns>")).is_some());
    assert_eq!(backends(&prefixed), expected);
    // A StatefulSet pod's stable name that no pod has (yet): the Service too.
    assert_eq!(backends(&name("web-7.svc-service1.<ns>.svc.cluster.local")), expected);
    let by_pod_address = name("4-4-4-4.<ns>.pod.cluster.local");
    assert_eq!(mapper.index.resolve_name(&by_pod_address), None, "no pod 4.4.4.4 yet");
    mapper.index.apply_meta("Deployment", &mk_deployment(NS, "deployment-depl"));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset(NS, "depl-rs", "deployment-depl"));
    mapper.index.apply(&mk_pod(NS, "depl-0", &["4.4.4.4"]).owned_by("ReplicaSet", "depl-rs"));
    assert!(matches!(
        mapper.index.resolve_name(&by_pod_address),
        Some(Resolution::Workload { workload, .. }) if &*workload.name == "deployment-depl"
    ));
    // Under the Service, a pod's own dashed address now names that pod.
    assert!(matches!(
        mapper.index.resolve_name(&prefixed),
        Some(Resolution::Workload { workload, .. }) if &*workload.name == "deployment-depl"
    ));
}

#[test]
fn kubefinder_addresses_once_a_pods_stay_in_cluster_until_their_grace_ends() {
    // TestIsSrcIpClusterInternal: an address seen on a pod stays internal for a while after the
    // pod is gone (Otterize: 10 minutes; here the deleted-pod grace, 5 minutes by default), then
    // is outside again. In between it is nobody's (never guessed), and connections from before
    // the deletion still name the pod.
    let case = scenario("kubefinder.TestIsSrcIpClusterInternal");
    assert_eq!(case["expected"]["1.1.1.1 after the pod is deleted"], true);
    let mut index = Index::default();
    let pod = mk_pod(NS, "test-pod", &["1.1.1.1"]);
    index.apply(&pod);
    let a = ip("1.1.1.1");
    assert!(matches!(index.resolve_address(a, at(60), None), Resolution::Workload { .. }));
    assert_eq!(
        index.resolve_address(ip("8.8.8.8"), at(60), None),
        Resolution::External(ip("8.8.8.8"))
    );
    index.delete(&pod.deleting_at("2026-01-01T00:10:00Z"));
    assert!(matches!(index.resolve_address(a, at(60), None), Resolution::Workload { .. }));
    assert_eq!(index.resolve_address(a, at(660), None), Resolution::Unattributed);
    index.prune(at(600 + 299));
    assert_eq!(index.resolve_address(a, at(660), None), Resolution::Unattributed);
    index.prune(at(600 + 301));
    assert_eq!(index.resolve_address(a, at(960), None), Resolution::External(a));
}

// === dns_cache_test.go ===

#[test]
fn dns_cache_cases() {
    let case = scenario("dnscache");
    let cases = case["cases"].as_array().unwrap();
    let client = ip("10.244.0.5");
    // Cases 1 and 2: a name accumulates addresses. Here the memory is kept per (client,
    // address) → names, the direction a connection needs; each address answers for the name.
    for c in &cases[..2] {
        let mut memory = DnsMemory::default();
        for add in c["add"].as_array().unwrap() {
            memory.remember(
                client,
                ip(str_of(&add[1])),
                str_of(&add[0]),
                at(0),
                add[2].as_u64().unwrap() as u32,
            );
        }
        for (name, addresses) in c["get"].as_object().unwrap() {
            let addresses: Vec<&str> = addresses.as_array().unwrap().iter().map(str_of).collect();
            for address in ["10.0.0.1", "10.0.0.2"] {
                let named = memory.names(client, ip(address), at(30)).iter().any(|n| &**n == name);
                assert_eq!(named, addresses.contains(&address), "{name} at {address}");
            }
        }
    }
    // Case 3: capacity in names, oldest evicted. DIFFERENCE: the capacity here counts
    // (client, address) pairs (what a flood of answers costs), and one address keeps the names
    // most recently given for it (a CDN address answers for several), so three names of one
    // address are all kept, newest first; past the capacity the least recently answered
    // address is forgotten, and counted.
    let c = &cases[2];
    assert_eq!(c["capacity"], 2);
    let mut memory =
        DnsMemory::new(DnsMemoryConfig { max_entries: 2, ..DnsMemoryConfig::default() });
    for add in c["add"].as_array().unwrap() {
        memory.remember(client, ip(str_of(&add[1])), str_of(&add[0]), at(0), 60);
    }
    let names: Vec<String> =
        memory.names(client, ip("10.0.0.1"), at(30)).iter().map(|n| n.to_string()).collect();
    assert_eq!(names, ["dns-2.com", "dns-1.com", "dns-0.com"]);
    for (i, address) in ["10.0.0.2", "10.0.0.3"].into_iter().enumerate() {
        memory.remember(client, ip(address), &format!("more-{i}.com"), at(1), 60);
    }
    assert!(memory.names(client, ip("10.0.0.1"), at(30)).is_empty(), "the oldest address went");
    assert_eq!(memory.evictions(), 1);
    // Case 4: a wildcard lookup (`*.surf-forecast.com` → addresses) serves Otterize's cloud
    // when it turns internet intents with wildcards into IPs. DIFFERENCE: nothing here turns
    // names into addresses (exported internet intents list the domains seen, and the intents
    // operator resolves them), so there is no such lookup; each address still names its host.
    let c = &cases[3];
    assert!(c.get("wildcard").is_some());
    let mut memory = DnsMemory::default();
    for add in c["add"].as_array().unwrap() {
        memory.remember(client, ip(str_of(&add[1])), str_of(&add[0]), at(0), 60);
    }
    assert_eq!(&*memory.names(client, ip("10.0.0.2"), at(30))[0], "api.surf-forecast.com");
}

// === serviceidresolver_test.go (workload identity) ===

fn owned(pod: Pod, api_version: &str, kind: &str, name: &str) -> Pod {
    let mut pod = pod;
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    pod
}

#[test]
fn identity_cases() {
    let case = scenario("identity");
    let cases = case["cases"].as_array().unwrap();
    let mut index = Index::default();
    let name = |index: &Index, pod: &str| {
        let w = index.pod_workload(NS, pod).unwrap();
        (w.name.to_string(), w.kind.to_string())
    };
    // Annotation; no owner.
    assert_eq!(cases[0]["expected"], "coolservice");
    index.apply(
        &mk_pod(NS, "coolpod", &["10.1.0.1"])
            .annotated("intents.otterize.com/workload-name", "coolservice"),
    );
    assert_eq!(name(&index, "coolpod").0, "coolservice");
    assert_eq!(cases[1]["expected"], "coolpod");
    index.apply(&mk_pod(NS, "coolpod2", &["10.1.0.2"]));
    assert_eq!(name(&index, "coolpod2"), ("coolpod2".into(), "Pod".into()));
    // Dots. DIFFERENCE: Otterize's identity replaces `.` by `_` everywhere; here the access graph
    // keeps the Deployment's real name and only exported ClientIntents write `_` (the intents
    // operator splits target names at `.`; issue 18, item 3). intentmap's export test checks
    // the exported form.
    assert_eq!(cases[2]["expected"], "cool-versioned-application_4_2_0");
    index.apply_meta("Deployment", &mk_deployment(NS, "cool-versioned-application.4.2.0"));
    index.apply(&owned(
        mk_pod(NS, "versioned", &["10.1.0.3"]),
        "apps/v1",
        "Deployment",
        "cool-versioned-application.4.2.0",
    ));
    assert_eq!(name(&index, "versioned").0, "cool-versioned-application.4.2.0");
    assert_eq!(
        model::intents_name(&name(&index, "versioned").0),
        "cool-versioned-application_4_2_0"
    );
    // An owner the mapper may not read (Forbidden: not watched): the owner reference's name.
    assert_eq!(cases[3]["expected"], "best-deployment-ever");
    index.apply(&owned(
        mk_pod(NS, "forbidden", &["10.1.0.4"]),
        "apps/v1",
        "Deployment",
        "best-deployment-ever",
    ));
    assert_eq!(name(&index, "forbidden"), ("best-deployment-ever".into(), "Deployment".into()));
    // A Job without a parent: the Job (the image-name option is off by default in Otterize too).
    let job = "my-crappy-1001-job-name-1234567890-12345";
    assert_eq!(cases[4]["expected"]["UseImageNameForServiceIDForJobs=false"], job);
    index.apply_meta("Job", &mk_job(NS, job, None));
    index.apply(&owned(mk_pod(NS, "job-pod", &["10.1.0.5"]), "batch/v1", "Job", job));
    assert_eq!(name(&index, "job-pod"), (job.into(), "Job".into()));
    // A batch/v1beta1 Job of a batch/v1beta1 CronJob: the CronJob, whatever the version.
    assert_eq!(cases[5]["expected"], "cool-cron-job");
    let mut job_meta = mk_job(NS, "cool-cron-job-28000000", None);
    job_meta.owner_references =
        owned(mk_pod(NS, "x", &[]), "batch/v1beta1", "CronJob", "cool-cron-job")
            .metadata
            .owner_references;
    index.apply_meta("CronJob", &mk_cronjob(NS, "cool-cron-job"));
    index.apply_meta("Job", &job_meta);
    index.apply(&owned(
        mk_pod(NS, "cron-pod", &["10.1.0.6"]),
        "batch/v1beta1",
        "Job",
        "cool-cron-job-28000000",
    ));
    assert_eq!(name(&index, "cron-pod"), ("cool-cron-job".into(), "CronJob".into()));
    // An owner of a kind nobody serves.
    let expected = &cases[6]["expected"];
    index.apply(&owned(
        mk_pod(NS, "bad-kind", &["10.1.0.7"]),
        "wrong.api/v1beta1",
        "BadKind",
        str_of(&expected["name"]),
    ));
    assert_eq!(
        name(&index, "bad-kind"),
        (str_of(&expected["name"]).into(), str_of(&expected["kind"]).into())
    );
}

// === Kafka authorizer lines (kafka/authorizer-lines.jsonl) ===

#[test]
fn every_authorizer_line_reads_as_its_source_logged_it() {
    let text = fixture_text("kafka/authorizer-lines.jsonl");
    let mut cases = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let case: Value = serde_json::from_str(line).expect("a JSON line");
        let id = str_of(&case["id"]);
        let parsed = parse_authorizer_line(str_of(&case["line"]));
        let expected = &case["expected"];
        if expected.is_null() {
            // Not an audit line: per-ACL debug lines, `No acl found`, `is a super user`, noise.
            // Counted as other broker lines, never as malformed (issue 18, item 9).
            assert_eq!(parsed, AuthorizerLine::Other, "{id}");
        } else {
            let AuthorizerLine::Entry(entry) = parsed else { panic!("{id}: {parsed:?}") };
            assert_eq!(entry.principal, str_of(&expected["principal"]), "{id}");
            assert_eq!(entry.allowed, expected["allowed"].as_bool().unwrap(), "{id}");
            assert_eq!(entry.operation, str_of(&expected["operation"]), "{id}");
            assert_eq!(entry.host, str_of(&expected["host"]), "{id}");
            assert_eq!(entry.resource_type, str_of(&expected["resource_type"]), "{id}");
            assert_eq!(entry.pattern_type, expected["pattern_type"].as_str(), "{id}");
            assert_eq!(entry.resource_name, str_of(&expected["resource_name"]), "{id}");
            assert_eq!(entry.request, expected["request"].as_str(), "{id}");
            assert_eq!(
                crd_operation(entry.operation),
                case["expected_crd_operation"].as_str(),
                "{id}"
            );
        }
        cases += 1;
    }
    assert_eq!(cases, 23);
}

#[test]
fn denied_kafka_operations_are_calls_kept_apart_from_allowed_ones() {
    // otterize-watcher-sample: a Denied Describe. DIFFERENCE: Otterize's watcher records every
    // line alike, so a refused operation reads as access the client has. Here it is recorded
    // under `denied` (listed as such, and still exported: it is a call the client makes), and
    // the per-ACL note lines beside audit lines are other lines, not malformed ones.
    let text = fixture_text("kafka/authorizer-lines.jsonl");
    let lines: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let line = |id: &str| str_of(&lines.iter().find(|c| c["id"] == id).unwrap()["line"]).to_owned();
    let mut mapper = Mapper::default();
    mapper.index.apply_meta("StatefulSet", &mk_statefulset("kafka", "kafka"));
    mapper
        .index
        .apply(&mk_pod("kafka", "kafka-0", &["10.244.0.2"]).owned_by("StatefulSet", "kafka"));
    mapper.index.apply(&mk_pod("otterize-tutorial-kafka-mtls", "myclient", &["10.244.0.27"]));
    let broker = KafkaBroker::Pod { namespace: "kafka".into(), name: "kafka-0".into() };
    let sample = line("otterize-watcher-sample");
    let debug = line("otterize-docs-matching-acl-debug");
    let (no_acl, superuser) = (line("aclauth-no-acl-found"), line("aclauth-superuser"));
    mapper.observe_kafka_log(
        &broker,
        [sample.as_str(), debug.as_str(), no_acl.as_str(), superuser.as_str()].map(|l| (at(60), l)),
        at(90),
    );
    let edges = mapper.snapshot();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(edges[0].kafka.len(), 1);
    assert_eq!(edges[0].kafka[0].name, "mytopic");
    assert_eq!(edges[0].kafka[0].denied, ["describe"]);
    // `operations` holds every operation called (what ClientIntents declare), `denied` those refused.
    assert_eq!(edges[0].kafka[0].operations, ["describe"]);
    let stats = mapper.stats();
    assert_eq!(
        (stats.kafka_accesses, stats.kafka_other_lines, stats.kafka_malformed_lines),
        (1, 3, 0)
    );
    assert!(model::render_list(&edges).contains("operations: [describe], denied: [describe]"));
}

// === Istio and Envoy ===

/// Each sidecar pod's scrape: the metrics text `texts` gives its workload (none: unreachable).
fn scrapes_of(mapper: &Mapper, texts: &[(String, String)]) -> Vec<SidecarScrape> {
    let pods: Vec<LabelledPod> = mapper.index.istio_sidecars();
    pods.into_iter()
        .map(|pod| {
            let text = texts.iter().find(|(w, _)| *w == *pod.workload.name).map(|(_, t)| t.clone());
            SidecarScrape {
                metrics: text.map(|t| read_metrics(&t)).ok_or_else(|| "unreachable".to_owned()),
                pod,
            }
        })
        .collect()
}

/// A Deployment `name` in `namespace` with one pod (with an Istio sidecar if `sidecar`).
fn mesh_workload(mapper: &mut Mapper, namespace: &str, name: &str, address: &str, sidecar: bool) {
    let replicaset = format!("{name}-5d9c7b");
    mapper.index.apply_meta("Deployment", &mk_deployment(namespace, name));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset(namespace, &replicaset, name));
    let pod = mk_pod(namespace, &format!("{replicaset}-x2x9q"), &[address])
        .owned_by("ReplicaSet", &replicaset);
    mapper.index.apply(&if sidecar { pod.with_istio_sidecar() } else { pod });
}

/// The same metrics with every value 0: a baseline round that makes the next one's values
/// increases.
fn zeroed(text: &str) -> String {
    text.lines()
        .map(|l| match l.rsplit_once(' ') {
            Some((series, _)) if !l.starts_with('#') => format!("{series} 0\n"),
            _ => format!("{l}\n"),
        })
        .collect()
}

#[test]
fn captured_sidecar_scrapes_read_as_expected() {
    let text = fixture_text("istio/captured-sidecar-scrapes.prom");
    let expected = fixture_json("istio/captured-sidecar-scrapes.expected.json");
    let metrics = read_metrics(&text);
    assert_reads_as_expected(&metrics, &expected);
    let series = expected["series"].as_array().expect("series");
    for read in &metrics.requests {
        assert_eq!(read.series.request_path, None, "no request_path label in these scrapes");
    }
    assert_ne!(
        metrics.requests[1].key, metrics.requests[2].key,
        "an extra label is another series"
    );
    let empty = text.lines().find(|l| l.starts_with("istio_simple_counter")).unwrap();
    let sample = mapper_core::prometheus::parse_line(empty).unwrap().unwrap();
    assert_eq!((sample.name, sample.labels.len(), sample.value), ("istio_simple_counter", 0, 4.0));

    // Through the mapper, each block from its own sidecar: only block C is an edge.
    let mut mapper = Mapper::default();
    mesh_workload(&mut mapper, "default", "sleep", "10.244.0.10", true);
    mesh_workload(&mut mapper, "default", "my-nginx", "10.244.0.11", true);
    mesh_workload(&mut mapper, "ns-5", "tier-1-app-a", "10.244.0.12", true);
    mesh_workload(&mut mapper, "ns-5", "tier-2-app-b", "10.244.0.13", false);
    mapper.index.apply(&mk_service("ns-5", "tier-2-app-b", &["10.96.5.2"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        "ns-5",
        "tier-2-app-b",
        "t2-1",
        &[("10.244.0.13", Some("tier-2-app-b-5d9c7b-x2x9q"))],
    ));
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(block) = line.strip_prefix("# --- block ") {
            let workload = match &block[..1] {
                "A" => "sleep",
                "B" => "my-nginx",
                _ => "tier-1-app-a",
            };
            blocks.push((workload.to_owned(), String::new()));
        } else if let Some((_, body)) = blocks.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    assert_eq!(blocks.len(), 3);
    let baseline: Vec<(String, String)> =
        blocks.iter().map(|(w, t)| (w.clone(), zeroed(t))).collect();
    mapper.observe_istio(&scrapes_of(&mapper, &baseline), at(60));
    // A node agent saw tier-1-app-a connect to tier-2-app-b's Service (which has no sidecar).
    mapper.observe(
        &ObservationBatch {
            tcp: vec![tcp("10.244.0.12", "10.96.5.2", 80, at(70))],
            ..Default::default()
        },
        at(80),
    );
    mapper.observe_istio(&scrapes_of(&mapper, &blocks), at(90));
    let edges = mapper.snapshot();
    let edge = series[3]["edge"].clone();
    assert_eq!(edges.len(), 1, "{edges:?}");
    assert_eq!(
        format!("{}.{}", edges[0].client.name, edges[0].client.namespace),
        str_of(&edge["client"])
    );
    assert!(
        matches!(&edges[0].target, Target::Kubernetes(w) if format!("{}.{}", w.name, w.namespace) == str_of(&edge["server"]))
    );
    assert!(edges[0].http.is_empty());
    assert_eq!(edges[0].connections, 1 + 376_752);
    let stats = mapper.stats();
    assert_eq!(stats.istio_unknown_targets, 1, "block A: www.wikipedia.org, no workload");
    assert_eq!(stats.istio_unknown_clients, 2, "block B: two series from outside the mesh");
}

#[test]
fn envoys_own_prometheus_output_parses_line_by_line() {
    let text = fixture_text("istio/envoy-prometheus-format.prom");
    let mut samples = 0;
    for line in text.lines() {
        let parsed =
            mapper_core::prometheus::parse_line(line).unwrap_or_else(|e| panic!("{line}: {e:?}"));
        let Some(sample) = parsed else {
            assert!(line.trim().is_empty() || line.starts_with('#'), "{line}");
            continue;
        };
        samples += 1;
        if sample.name == "envoy_cluster_test_1_upstream_cx_total" {
            assert_eq!(sample.label("a_tag_name"), Some("a.tag-value"), "values keep . and -");
        }
        if line.contains("le=\"+Inf\"") {
            assert_eq!(sample.label("le"), Some("+Inf"));
        }
        if sample.name == "envoy_histogram1_sum" {
            assert!(sample.labels.is_empty());
            assert_eq!(sample.value, 105_105_105_000.0);
        }
    }
    let sample_lines = text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')).count();
    assert_eq!(samples, sample_lines);
    let sections = text.lines().filter(|l| l.starts_with("# --- ")).count();
    assert_eq!(sections, 2, "OutputWithAllMetricTypes, HistogramWithHighCounts");
}

/// istio/proxy's expected `istio_requests_total` label set (a Go template), rendered with
/// `RequestCount` 7, `ClientPort` 8080 and no gRPC status, as a Prometheus line.
fn istio_proxy_line(template: &str) -> String {
    let mut labels = Vec::new();
    let mut value = String::new();
    let mut name = None;
    let mut skipping = false;
    for line in template.lines().map(str::trim) {
        match line {
            "{{- if .Vars.GrpcResponseStatus }}" => skipping = true,
            "{{- else }}" => skipping = false,
            "{{- end }}" => {}
            _ if skipping => {}
            _ => {
                let line = line
                    .replace("{{ .Vars.RequestCount }}", "7")
                    .replace("{{ .Vars.ClientPort }}", "8080")
                    .replace("{{ .Vars.GrpcResponseStatus }}", "");
                if let Some(n) = line.strip_prefix("- name: ") {
                    name = Some(n.to_owned());
                } else if let Some(v) = line.strip_prefix("value: ") {
                    match name.take() {
                        Some(n) => labels.push(format!("{n}=\"{}\"", v.trim_matches('"'))),
                        None => value = v.to_owned(),
                    }
                }
            }
        }
    }
    format!("istio_requests_total{{{}}} {value}\n", labels.join(","))
}

#[test]
fn istio_proxys_expected_label_sets_read_as_requests() {
    for (file, reporter) in
        [("client_request_total", "source"), ("server_request_total", "destination")]
    {
        let line = istio_proxy_line(&fixture_text(&format!(
            "istio/istio-proxy-testdata/{file}.yaml.tmpl"
        )));
        let metrics = read_metrics(&line);
        assert_eq!(metrics.malformed_lines, 0, "{line}");
        assert_eq!(metrics.requests.len(), 1, "{line}");
        let read = &metrics.requests[0];
        assert_eq!(read.value, 7.0);
        let s = &read.series;
        assert_eq!(s.reporter, reporter);
        assert_eq!(
            (s.source_workload.as_str(), s.source_workload_namespace.as_str()),
            ("productpage-v1", "default")
        );
        assert_eq!(
            (s.destination_workload.as_str(), s.destination_workload_namespace.as_str()),
            ("ratings-v1", "default")
        );
        assert_eq!(s.destination_service_namespace, "default");
    }
}

/// Otterize's Envoy JSON stat name as a Prometheus line: the tags its watcher reads (each
/// `<tag>.` up to the next `.`, the path to the end), and the value. Workload names are
/// lowercased: Otterize's test names them `clientA`, which no Kubernetes object can be named.
fn stat_as_prometheus(stat: &Value) -> (String, String) {
    let name = str_of(&stat["name"]);
    let tag = |t: &str| {
        let after = name.split(&format!(".{t}.")).nth(1)?;
        Some(after.split('.').next().unwrap_or_default().to_owned())
    };
    let mut labels = Vec::new();
    for t in [
        "reporter",
        "source_workload",
        "source_workload_namespace",
        "destination_workload",
        "destination_workload_namespace",
        "destination_service_name",
        "request_method",
    ] {
        if let Some(v) = tag(t) {
            let v = if t.ends_with("workload") { v.to_lowercase() } else { v };
            labels.push(format!("{t}=\"{v}\""));
        }
    }
    if let Some(path) = name.split(".request_path.").nth(1) {
        labels.push(format!("request_path=\"{path}\""));
    }
    let source = tag("source_workload").expect("a source workload").to_lowercase();
    (source, format!("istio_requests_total{{{}}} {}\n", labels.join(","), stat["value"]))
}

fn watcher_round(stats: &Value) -> Vec<(String, String)> {
    let mut texts: Vec<(String, String)> = Vec::new();
    for stat in stats.as_array().unwrap() {
        let (source, line) = stat_as_prometheus(stat);
        match texts.iter_mut().find(|(w, _)| *w == source) {
            Some((_, text)) => text.push_str(&line),
            None => texts.push((source, line)),
        }
    }
    texts
}

/// Otterize's watcher test world: clients A, B, C with sidecars, `server` without one behind
/// `nginx-service`, each client seen connecting to it by a node agent.
fn watcher_mesh() -> Mapper {
    let mut mapper = Mapper::default();
    for (i, client) in ["clienta", "clientb", "clientc", "sleep"].into_iter().enumerate() {
        let ns = if client == "sleep" { "default" } else { NS };
        mesh_workload(&mut mapper, ns, client, &format!("10.244.1.{}", i + 1), true);
    }
    mesh_workload(&mut mapper, NS, "server", "10.244.1.9", false);
    mapper.index.apply(&mk_service(NS, "nginx-service", &["10.96.1.9"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        NS,
        "nginx-service",
        "n-1",
        &[("10.244.1.9", Some("server-5d9c7b-x2x9q"))],
    ));
    let tcp_lines =
        (1..=3).map(|i| tcp(&format!("10.244.1.{i}"), "10.96.1.9", 80, at(10))).collect();
    mapper.observe(&ObservationBatch { tcp: tcp_lines, ..Default::default() }, at(20));
    mapper
}

#[test]
fn istio_watcher_ignore_old_metrics() {
    // TestIgnoreOldMetrics. DIFFERENCE: Otterize reports every series the first time it sees
    // it, so a sidecar's totals since it started (calls of last week) read as calls made now.
    // Here a pod's first scrape is a baseline: round 0 reports nothing. Round 1 agrees with
    // Otterize: an unchanged counter is no call, one that went down is a restart and counts.
    let case = &fixture_json("istio/otterize-istio-watcher-cases.json")["cases"][0];
    assert_eq!(case["id"], "TestIgnoreOldMetrics");
    let mut mapper = watcher_mesh();
    let rounds = case["rounds"].as_array().unwrap();
    assert_eq!(
        rounds[0]["expected_connections"].as_array().unwrap().len(),
        3,
        "Otterize's round 0"
    );
    mapper.observe_istio(&scrapes_of(&mapper, &watcher_round(&rounds[0]["stats"])), at(60));
    assert!(http_edges(&mapper).is_empty(), "a baseline");
    mapper.observe_istio(&scrapes_of(&mapper, &watcher_round(&rounds[1]["stats"])), at(90));
    assert_eq!(http_edges(&mapper), expected_http(&rounds[1]), "{}", rounds[1]["note"]);
    assert_eq!(mapper.stats().istio_counter_resets, 1, "clientA's 5 -> 1");
}

#[test]
fn istio_watcher_report_results_union_methods_per_path() {
    let cases = fixture_json("istio/otterize-istio-watcher-cases.json");
    let case = &cases["cases"][1];
    assert_eq!(case["id"], "TestReportResults");
    let mut mapper = watcher_mesh();
    let round = watcher_round(&case["rounds"][0]["stats"]);
    // The case's single round follows a baseline (see istio_watcher_ignore_old_metrics).
    let baseline: Vec<(String, String)> =
        round.iter().map(|(w, t)| (w.clone(), zeroed(t))).collect();
    mapper.observe_istio(&scrapes_of(&mapper, &baseline), at(60));
    mapper.observe_istio(&scrapes_of(&mapper, &round), at(90));
    let expected: BTreeSet<_> = case["rounds"][0]["expected_report"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let mut methods: Vec<String> =
                r["Methods"].as_array().unwrap().iter().map(|m| str_of(m).to_owned()).collect();
            methods.sort();
            (
                str_of(&r["SrcWorkload"]).to_lowercase(),
                str_of(&r["DstWorkload"]).to_owned(),
                str_of(&r["Path"]).to_owned(),
                methods,
            )
        })
        .collect();
    assert_eq!(http_edges(&mapper), expected);

    // source-comment-passthrough: egress through PassthroughCluster is no in-mesh edge.
    let case = &cases["cases"][2];
    assert_eq!(case["id"], "source-comment-passthrough");
    let round = watcher_round(&case["rounds"][0]["stats"]);
    let baseline: Vec<(String, String)> =
        round.iter().map(|(w, t)| (w.clone(), zeroed(t))).collect();
    let before = mapper.snapshot();
    mapper.observe_istio(&scrapes_of(&mapper, &baseline), at(120));
    mapper.observe_istio(&scrapes_of(&mapper, &round), at(150));
    assert_eq!(mapper.snapshot(), before);
    assert_eq!(mapper.stats().istio_unknown_targets, 1);
}

// === Capture (capture/otterize-sniffer-cases.json) ===
//
// The node agent's DNS, packet and /proc parsers are cluster-agent's (its own tests read
// frames); what they produce is what the mapper is given. These tests send each case's decoded
// result to the mapper as the node agent does, and check the naming and direction.

#[test]
fn sniffed_dns_answers_name_the_addresses_by_the_queried_name() {
    let cases = fixture_json("capture/otterize-sniffer-cases.json");
    let expected_cnames = [vec![], vec!["internal.otterize-dev.com".to_owned()]];
    for (case, cnames) in cases["dns_packets"].as_array().unwrap().iter().zip(expected_cnames) {
        let id = str_of(&case["id"]);
        let result = &case["expected"][0];
        let client = str_of(&result["srcIp"]);
        let destination = &result["destinations"][0];
        let address = str_of(&destination["destinationIP"]);
        let name = str_of(&destination["destination"]);
        let mut mapper = Mapper::default();
        mapper.index.apply(&mk_pod(NS, "client", &[client]));
        let when = at(60);
        let answer = DnsAnswer {
            client_ip: ip(client),
            name: name.to_owned(),
            cnames,
            addresses: vec![ip(address)],
            ttl_seconds: destination["ttl"].as_u64().unwrap() as u32,
            at: when,
        };
        let batch = ObservationBatch {
            dns: vec![answer],
            tcp: vec![tcp(client, address, 443, when)],
            ..Default::default()
        };
        mapper.observe(&batch, at(90));
        let edges = mapper.snapshot();
        assert_eq!(edges.len(), 1, "{id}: {edges:?}");
        match &edges[0].target {
            // The queried name, not the CNAME's target (TestHandlePacketWithCNAME).
            Target::Internet(i) => {
                assert_eq!(i.domains, [name], "{id}");
                assert_eq!(i.ips, [address], "{id}");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
}

#[test]
fn a_sniffed_syn_is_a_call_from_its_source_to_its_destination_port() {
    let cases = fixture_json("capture/otterize-sniffer-cases.json");
    let case = &cases["tcp_syn_packets"][0];
    let result = &case["expected"][0];
    let destination = &result["destinations"][0];
    let (src, dst) = (str_of(&result["srcIp"]), str_of(&destination["destinationIP"]));
    let port = destination["destinationPort"].as_u64().unwrap() as u16;
    assert_eq!(destination["srcPorts"][0], 55613);
    let mut mapper = Mapper::default();
    mapper.index.apply(&mk_pod(NS, "client-1", &[src]));
    mapper.index.apply(&mk_pod(NS, "server-1", &[dst]));
    mapper.observe(
        &ObservationBatch { tcp: vec![tcp(src, dst, port, at(60))], ..Default::default() },
        at(90),
    );
    let edges = mapper.snapshot();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].client.name, "client-1");
    assert!(matches!(&edges[0].target, Target::Kubernetes(w) if w.name == "server-1"));
    assert_eq!(edges[0].ports.iter().map(|p| p.port).collect::<Vec<_>>(), [8000]);
}

/// A `/proc/net/tcp{,6}` address (`5978F40A:89A4`): 32-bit words in host (little-endian) order.
fn proc_address(field: &str) -> (IpAddr, u16) {
    let (address, port) = field.split_once(':').unwrap();
    let port = u16::from_str_radix(port, 16).unwrap();
    let bytes: Vec<u8> = (0..address.len() / 8)
        .flat_map(|w| u32::from_str_radix(&address[w * 8..w * 8 + 8], 16).unwrap().to_le_bytes())
        .collect();
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap()),
        _ => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap()).to_canonical(),
    };
    (ip, port)
}

#[test]
fn a_proc_scan_reports_clients_with_the_servers_port() {
    // TestScanProcDir. DIFFERENCE: Otterize's expected result puts the local (client) port in
    // `destinationPort` and the server's port 80 in `srcPorts`, swapped. A connection is from
    // the pod's local address and port to the remote address and port, so the edge's port is 80.
    let cases = fixture_json("capture/otterize-sniffer-cases.json");
    let scan = &cases["proc_net_scan"];
    let mut sockets = Vec::new();
    for file in ["/proc/100/net/tcp", "/proc/100/net/tcp6"] {
        for line in str_of(&scan["files"][file]).lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            sockets.push((proc_address(fields[1]), proc_address(fields[2]), fields[3].to_owned()));
        }
    }
    let listening: Vec<u16> = sockets.iter().filter(|s| s.2 == "0A").map(|s| s.0 .1).collect();
    let clients: Vec<_> =
        sockets.iter().filter(|s| s.2 == "01" && !listening.contains(&s.0 .1)).collect();
    let expected = scan["expected_sorted_by_srcIp"].as_array().unwrap();
    assert_eq!(clients.len(), expected.len());
    let mut mapper = Mapper::default();
    let mut batch = ObservationBatch::default();
    for (((local, local_port), (remote, remote_port), _), want) in clients.iter().zip(expected) {
        let destination = &want["destinations"][0];
        assert_eq!(local.to_string(), str_of(&want["srcIp"]));
        assert_eq!(remote.to_string(), str_of(&destination["destinationIP"]));
        assert_eq!(
            u64::from(*local_port),
            destination["destinationPort"].as_u64().unwrap(),
            "Otterize's swap"
        );
        assert_eq!(
            u64::from(*remote_port),
            destination["srcPorts"][0].as_u64().unwrap(),
            "Otterize's swap"
        );
        let pod = format!("{}-{}", str_of(&want["srcHostname"]), mapper.index.stats().pods);
        mapper.index.apply(&mk_pod(NS, &pod, &[&local.to_string()]));
        let mut line = tcp(&local.to_string(), &remote.to_string(), *remote_port, at(60));
        line.src_port = *local_port;
        batch.tcp.push(line);
    }
    mapper.observe(&batch, at(90));
    let edges = mapper.snapshot();
    assert_eq!(edges.len(), 2, "{edges:?}");
    for edge in &edges {
        assert_eq!(edge.ports.iter().map(|p| p.port).collect::<Vec<_>>(), [80], "{edge:?}");
        assert!(edge.client.name.starts_with("thisverypod"));
    }
}

#[test]
fn otterizes_operation_map_and_kraft_names_map_alike() {
    let semantics = fixture_json("kafka/otterize-kafka-semantics.json");
    for (logged, crd) in semantics["operation_map_case_insensitive"].as_object().unwrap() {
        assert_eq!(crd_operation(logged), crd.as_str(), "{logged}");
        assert_eq!(crd_operation(&logged.to_uppercase()), crd.as_str(), "{logged}");
    }
    // KRaft's enum-style names, which Otterize's lower-casing lookup would not map.
    for (kraft, crd) in [
        ("DESCRIBE_CONFIGS", "DescribeConfigs"),
        ("IDEMPOTENT_WRITE", "IdempotentWrite"),
        ("CLUSTER_ACTION", "ClusterAction"),
        ("ALTER_CONFIGS", "AlterConfigs"),
    ] {
        assert!(semantics["behaviour"].to_string().contains(kraft));
        assert_eq!(crd_operation(kraft), Some(crd));
    }
}
