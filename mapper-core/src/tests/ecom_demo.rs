//! The Google microservices demo as the network mapper's README lists it.

use super::*;
use crate::fixtures::{mk_endpoint_slice, mk_service};

const NS: &str = "otterize-ecom-demo";
const START: &str = "cartservice in namespace otterize-ecom-demo calls:";
const LAST_CLIENT: &str = "recommendationservice in namespace otterize-ecom-demo calls:";

/// (workload, service port)
const SERVICES: [(&str, u16); 12] = [
    ("adservice", 9555),
    ("cartservice", 7070),
    ("checkoutservice", 5050),
    ("currencyservice", 7000),
    ("emailservice", 5000),
    ("frontend", 80),
    ("loadgenerator", 8089),
    ("paymentservice", 50051),
    ("productcatalogservice", 3550),
    ("recommendationservice", 8080),
    ("redis-cart", 6379),
    ("shippingservice", 50051),
];

const CALLS: [(&str, &str); 17] = [
    ("cartservice", "redis-cart"),
    ("checkoutservice", "cartservice"),
    ("checkoutservice", "currencyservice"),
    ("checkoutservice", "emailservice"),
    ("checkoutservice", "paymentservice"),
    ("checkoutservice", "productcatalogservice"),
    ("checkoutservice", "shippingservice"),
    ("frontend", "adservice"),
    ("frontend", "cartservice"),
    ("frontend", "checkoutservice"),
    ("frontend", "currencyservice"),
    ("frontend", "productcatalogservice"),
    ("frontend", "recommendationservice"),
    ("frontend", "shippingservice"),
    ("loadgenerator", "frontend"),
    ("recommendationservice", "productcatalogservice"),
    ("frontend", "cartservice"),
];

fn pod_ip(i: usize) -> String {
    format!("10.244.1.{}", 10 + i)
}

fn cluster_ip(i: usize) -> String {
    format!("10.96.10.{}", 10 + i)
}

fn position(workload: &str) -> usize {
    SERVICES
        .iter()
        .position(|(name, _)| *name == workload)
        .unwrap_or_else(|| panic!("{workload} is not in the demo"))
}

/// The list block of the README in `shared/seeds`.
fn readme_example() -> String {
    let readme = testkit::need::shared_file("seeds/network-mapper-readme.txt");
    let text =
        std::fs::read_to_string(&readme).unwrap_or_else(|e| panic!("{}: {e}", readme.display()));
    let start = text.find(START).unwrap_or_else(|| panic!("{} has no {START:?}", readme.display()));
    let last = start
        + text[start..]
            .find(LAST_CLIENT)
            .unwrap_or_else(|| panic!("{} has no {LAST_CLIENT:?}", readme.display()));
    let after_last = last + LAST_CLIENT.len() + 1;
    let end = after_last + text[after_last..].find('\n').unwrap_or(text.len() - after_last);
    format!("{}\n", &text[start..end])
}

fn demo_mapper() -> Mapper {
    let mut mapper = mapper();
    for (i, (name, _)) in SERVICES.iter().enumerate() {
        let pod = deploy(&mut mapper.index, NS, name, &[&pod_ip(i)]);
        mapper.index.apply(&mk_service(NS, name, &[&cluster_ip(i)], &[("app", name)]));
        // Half the Services are known through their EndpointSlices, half through their selectors.
        if i % 2 == 0 {
            mapper.index.apply(&mk_endpoint_slice(
                NS,
                name,
                &format!("{name}-abcde"),
                &[(pod_ip(i).as_str(), Some(pod.as_str()))],
            ));
        }
    }
    mapper
}

#[test]
fn the_readme_list_is_reproduced_from_connections_to_service_addresses() {
    let expected = readme_example();
    let mut mapper = demo_mapper();
    let connections = CALLS
        .iter()
        .enumerate()
        .map(|(n, (client, server))| {
            let (c, s) = (position(client), position(server));
            tcp(&pod_ip(c), &cluster_ip(s), SERVICES[s].1, &format!("2026-01-01T10:00:{:02}Z", n))
        })
        .collect();
    mapper.observe(&batch(connections), later());
    // A DNS lookup of a Service is a call too; this one repeats a known edge.
    let lookup = dns(
        &pod_ip(position("loadgenerator")),
        "frontend.otterize-ecom-demo.svc.cluster.local.",
        &[],
        &[&cluster_ip(position("frontend"))],
        "2026-01-01T10:01:00Z",
    );
    mapper.observe(&ObservationBatch { dns: vec![lookup], ..ObservationBatch::default() }, later());

    let edges = mapper.snapshot();
    assert_eq!(model::render_list(&edges), expected);
    assert_reportable(&edges);
    assert_eq!(mapper.stats().tcp_connections, CALLS.len() as u64);
    assert_eq!(mapper.stats().dns_cluster_answers, 1);
    let repeated = edges
        .iter()
        .find(|e| e.client.name == "frontend" && e.key().target_name == "cartservice")
        .unwrap();
    assert_eq!(repeated.connections, 2);
    assert_eq!(repeated.ports, vec!["7070/TCP".parse().unwrap()]);
    assert_eq!(repeated.client.kind.as_deref(), Some("Deployment"));
}
