//! Ambient proxies' counters in the Istio round (see [`crate::istio::ambient`] for the rules):
//! a ztunnel's client-side series become claims of the clients on its node at once, every
//! increase is named through the index, bound to what the proxy may speak for and held for the
//! round's end with the sidecars' increases.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{key, Side};
use crate::identity::Workload;
use crate::index::{Index, Name};
use crate::istio::ambient::{indexed_workload, principal_agrees};
use crate::istio::corroboration::{ClaimedPath, Pair};
use crate::istio::{
    self, AmbientProxy, AmbientScrape, ProxyRole, RequestSeries, SeriesKind, SidecarMetrics,
    SidecarScrape,
};
use crate::mapper::stats::{add, bump};
use crate::mapper::Mapper;
use crate::resolve::{Resolution, Via};

/// Look-ups of one scrape, each made once.
#[derive(Default)]
struct Lookups {
    workloads: HashMap<(String, String), Option<Arc<Workload>>>,
    waypoints: HashMap<(Name, Name), bool>,
    on_node: HashMap<(Name, Name), bool>,
}

impl Lookups {
    fn workload(&mut self, index: &Index, namespace: &str, name: &str) -> Option<Arc<Workload>> {
        self.workloads
            .entry((namespace.to_owned(), name.to_owned()))
            .or_insert_with(|| indexed_workload(index, namespace, name))
            .clone()
    }

    fn is_waypoint(&mut self, index: &Index, workload: &Workload) -> bool {
        *self.waypoints.entry(key(workload)).or_insert_with(|| index.is_waypoint_workload(workload))
    }

    fn enrolled_on(&mut self, index: &Index, workload: &Workload, node: &str) -> bool {
        *self
            .on_node
            .entry(key(workload))
            .or_insert_with(|| index.ambient_pod_on(workload, |n| n == node))
    }
}

/// Why a series names no call the mapper records.
enum Refused {
    UnknownClient,
    UnknownTarget,
    Foreign,
    WaypointHop,
    UnknownReporter,
}

impl Mapper {
    /// One whole round at `now` over these scrapes: sidecars and ambient proxies (every one
    /// there is, scraped or not).
    pub fn observe_mesh(
        &mut self,
        sidecars: &[SidecarScrape],
        proxies: &[AmbientScrape],
        now: DateTime<Utc>,
    ) {
        let pods: Vec<_> = sidecars
            .iter()
            .map(|s| s.pod.clone())
            .chain(proxies.iter().map(|p| p.proxy.pod.clone()))
            .collect();
        self.begin_istio_round(&pods, now);
        for scrape in sidecars {
            self.observe_sidecar(&scrape.pod, scrape.metrics.as_ref().map_err(String::as_str));
        }
        for scrape in proxies {
            self.observe_ambient(&scrape.proxy, scrape.metrics.as_ref().map_err(String::as_str));
        }
        self.end_istio_round(now);
    }

    /// One ambient proxy's scrape in the current round (begun with its pod among the round's
    /// pods): a ztunnel's client-side series become claims at once, what the counters grew by
    /// waits for [`Mapper::end_istio_round`].
    pub fn observe_ambient(
        &mut self,
        proxy: &AmbientProxy,
        metrics: Result<&SidecarMetrics, &str>,
    ) {
        if metrics.is_ok() || self.istio.windows.follows(&proxy.pod) {
            if let ProxyRole::Ztunnel { node } = &proxy.role {
                self.istio.round.ztunnel_nodes.insert(node.clone());
            }
        }
        let Ok(metrics) = metrics else {
            bump(&mut self.stats.istio_scrape_failures);
            return;
        };
        bump(&mut self.stats.istio_ambient_scrapes);
        let mut lookups = Lookups::default();
        if let ProxyRole::Ztunnel { node } = &proxy.role {
            self.note_ztunnel_claims(node, metrics, &mut lookups);
        }
        let (increases, counts) = self.istio.windows.increases(&proxy.pod, metrics);
        add(&mut self.stats.istio_baselines, u64::from(counts.baseline));
        add(&mut self.stats.istio_counter_resets, counts.counter_resets);
        add(&mut self.stats.istio_malformed_lines, counts.malformed_lines);
        add(&mut self.stats.istio_untracked_series, counts.untracked_series);
        for increase in increases {
            match self.name_ambient(proxy, &increase.series, &mut lookups) {
                Ok((side, client, server)) => {
                    let via =
                        matches!(proxy.role, ProxyRole::Waypoint).then(|| key(&proxy.pod.workload));
                    let target = Resolution::Workload { workload: server, via: Via::PodIp };
                    self.pend(side, client, target, &increase, via);
                }
                Err(refused) => bump(match refused {
                    Refused::UnknownClient => &mut self.stats.istio_unknown_clients,
                    Refused::UnknownTarget => &mut self.stats.istio_unknown_targets,
                    Refused::Foreign => &mut self.stats.istio_foreign_series,
                    Refused::WaypointHop => &mut self.stats.istio_waypoint_hops,
                    Refused::UnknownReporter => &mut self.stats.istio_unknown_reporters,
                }),
            }
        }
    }

    /// A ztunnel's client-side series of its own node's clients, as their claims.
    fn note_ztunnel_claims(&mut self, node: &str, metrics: &SidecarMetrics, lookups: &mut Lookups) {
        for sample in
            metrics.requests.iter().filter(|s| s.series.reporter == "source" && s.value > 0.0)
        {
            let series = &sample.series;
            let Some(client) = lookups.workload(
                &self.index,
                &series.source_workload_namespace,
                &series.source_workload,
            ) else {
                continue;
            };
            let Some(server) = lookups.workload(
                &self.index,
                &series.destination_workload_namespace,
                &series.destination_workload,
            ) else {
                continue;
            };
            if !principal_agrees(series.source_principal.as_deref(), &client.namespace)
                || !principal_agrees(series.destination_principal.as_deref(), &server.namespace)
                || !lookups.enrolled_on(&self.index, &client, node)
            {
                continue;
            }
            let path = match series.kind {
                SeriesKind::TcpConnections => ClaimedPath::None,
                SeriesKind::Requests => match istio::request_path(series.request_path.as_deref()) {
                    Ok(Some(path)) => ClaimedPath::Path(path),
                    Ok(None) => ClaimedPath::None,
                    Err(_) => ClaimedPath::Unusable,
                },
            };
            self.istio.claims.note(Pair { client: key(&client), server: key(&server) }, path);
        }
    }

    /// The side, client and server of an ambient proxy's series, if it may name them.
    fn name_ambient(
        &self,
        proxy: &AmbientProxy,
        series: &RequestSeries,
        lookups: &mut Lookups,
    ) -> Result<(Side, Arc<Workload>, Arc<Workload>), Refused> {
        let client = lookups
            .workload(&self.index, &series.source_workload_namespace, &series.source_workload)
            .ok_or(Refused::UnknownClient)?;
        let server = lookups
            .workload(
                &self.index,
                &series.destination_workload_namespace,
                &series.destination_workload,
            )
            .ok_or(Refused::UnknownTarget)?;
        if !principal_agrees(series.source_principal.as_deref(), &client.namespace)
            || !principal_agrees(series.destination_principal.as_deref(), &server.namespace)
        {
            return Err(Refused::Foreign);
        }
        match (&proxy.role, series.reporter.as_str()) {
            (ProxyRole::Ztunnel { node }, reporter @ ("source" | "destination")) => {
                if lookups.is_waypoint(&self.index, &client)
                    || lookups.is_waypoint(&self.index, &server)
                {
                    return Err(Refused::WaypointHop);
                }
                let (own, side) = if reporter == "source" {
                    (&client, Side::Source { server: Some(server.clone()), ztunnel: true })
                } else {
                    (&server, Side::Destination)
                };
                if !lookups.enrolled_on(&self.index, own, node) {
                    return Err(Refused::Foreign);
                }
                Ok((side, client, server))
            }
            (ProxyRole::Waypoint, "waypoint" | "destination") => {
                Ok((Side::Destination, client, server))
            }
            _ => Err(Refused::UnknownReporter),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use model::observation::ObservationBatch;
    use model::{Edge, HttpResource, Target};

    use super::*;
    use crate::fixtures::*;
    use crate::read_ambient_metrics;

    /// `shop` enrolled in ambient mode: web (node-a), cart (node-b), legacy (node-a, opted
    /// out), a waypoint (node-b); db in `data`, outside the mesh; a ztunnel on each node.
    fn ambient_mesh() -> Mapper {
        let mut mapper = Mapper::default();
        let mut shop = mk_namespace("shop");
        shop.labels =
            Some(BTreeMap::from([("istio.io/dataplane-mode".to_owned(), "ambient".to_owned())]));
        mapper.index.apply_meta("Namespace", &shop);
        mapper.index.apply_meta("Namespace", &mk_namespace("data"));
        mapper.index.apply_meta("Namespace", &mk_namespace("istio-system"));
        for (namespace, name, ip, node, extra) in [
            ("shop", "web", "10.244.1.5", "node-a", None),
            ("shop", "cart", "10.244.2.6", "node-b", None),
            ("shop", "legacy", "10.244.1.7", "node-a", Some(("istio.io/dataplane-mode", "none"))),
            (
                "shop",
                "waypoint",
                "10.244.2.9",
                "node-b",
                Some(("istio.io/gateway-name", "waypoint")),
            ),
            ("data", "db", "10.244.1.8", "node-a", None),
        ] {
            let replicaset = format!("{name}-5d9c7b");
            mapper.index.apply_meta("Deployment", &mk_deployment(namespace, name));
            mapper.index.apply_meta("ReplicaSet", &mk_replicaset(namespace, &replicaset, name));
            let mut pod = mk_pod(namespace, &format!("{replicaset}-x2x9q"), &[ip])
                .owned_by("ReplicaSet", &replicaset)
                .labelled("app", name)
                .on_node(node);
            if let Some((key, value)) = extra {
                pod = pod.labelled(key, value);
            }
            mapper.index.apply(&pod);
        }
        mapper.index.apply(&mk_service("data", "db", &["10.96.0.8"], &[("app", "db")]));
        mapper.index.apply_meta("DaemonSet", &mk_daemonset("istio-system", "ztunnel"));
        for (pod, ip, node) in
            [("ztunnel-a", "10.244.1.2", "node-a"), ("ztunnel-b", "10.244.2.2", "node-b")]
        {
            mapper.index.apply(
                &mk_pod("istio-system", pod, &[ip])
                    .owned_by("DaemonSet", "ztunnel")
                    .labelled("app", "ztunnel")
                    .on_node(node),
            );
        }
        mapper
    }

    /// One ztunnel TCP series (`source`/`destination` workloads in `namespace`/`shop`).
    fn tcp(reporter: &str, source: (&str, &str), destination: (&str, &str), value: u64) -> String {
        let ((sns, s), (dns, d)) = (source, destination);
        format!(
            "istio_tcp_connections_opened_total{{reporter=\"{reporter}\",source_workload=\"{s}\",source_canonical_service=\"{s}\",\
             source_canonical_revision=\"latest\",source_workload_namespace=\"{sns}\",source_principal=\"spiffe://cluster.local/ns/{sns}/sa/{s}\",\
             source_app=\"{s}\",source_version=\"latest\",source_cluster=\"Kubernetes\",destination_service=\"{d}.{dns}.svc.cluster.local\",\
             destination_service_namespace=\"{dns}\",destination_service_name=\"{d}\",destination_workload=\"{d}\",destination_canonical_service=\"{d}\",\
             destination_canonical_revision=\"latest\",destination_workload_namespace=\"{dns}\",destination_principal=\"spiffe://cluster.local/ns/{dns}/sa/{d}\",\
             destination_app=\"{d}\",destination_version=\"latest\",destination_cluster=\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\",\
             connection_security_policy=\"mutual_tls\"}} {value}\n"
        )
    }

    /// One waypoint request series of `source` calling `destination` (both in `shop`).
    fn waypoint(source: &str, destination: &str, method: &str, path: &str, value: u64) -> String {
        format!(
            "istio_requests_total{{reporter=\"waypoint\",source_workload=\"{source}\",source_workload_namespace=\"shop\",\
             source_principal=\"spiffe://cluster.local/ns/shop/sa/{source}\",destination_workload=\"{destination}\",\
             destination_workload_namespace=\"shop\",destination_principal=\"spiffe://cluster.local/ns/shop/sa/{destination}\",\
             destination_service=\"{destination}.shop.svc.cluster.local\",destination_service_name=\"{destination}\",\
             destination_service_namespace=\"shop\",request_protocol=\"http\",response_code=\"200\",response_flags=\"-\",\
             connection_security_policy=\"mutual_tls\",request_method=\"{method}\",request_path=\"{path}\"}} {value}\n\
             envoy_server_uptime 600\n"
        )
    }

    /// A round in which each proxy pod named answers the text given (the others: unreachable).
    fn round(mapper: &mut Mapper, texts: &[(&str, String)], at: &str) {
        let scrapes: Vec<AmbientScrape> = mapper
            .index
            .istio_ambient_proxies("istio-system")
            .into_iter()
            .map(|proxy| AmbientScrape {
                metrics: texts
                    .iter()
                    .find(|(pod, _)| proxy.pod.pod.name.starts_with(pod))
                    .map(|(_, text)| read_ambient_metrics(text))
                    .ok_or_else(|| "unreachable".to_owned()),
                proxy,
            })
            .collect();
        mapper.observe_mesh(&[], &scrapes, ts(at));
    }

    fn edge<'e>(edges: &'e [Edge], client: &str, server: &str) -> Option<&'e Edge> {
        edges.iter().find(|e| {
            &*e.client.name == client
                && matches!(&e.target, Target::Kubernetes(w) if &*w.name == server)
        })
    }

    #[test]
    fn ztunnel_connections_count_once_from_the_servers_side_baseline_then_increases() {
        let mut mapper = ambient_mesh();
        let texts = |a: u64, b: u64| {
            vec![
                ("ztunnel-a", tcp("source", ("shop", "web"), ("shop", "cart"), a)),
                ("ztunnel-b", tcp("destination", ("shop", "web"), ("shop", "cart"), b)),
            ]
        };
        round(&mut mapper, &texts(5, 5), "2026-01-01T10:00:00Z");
        assert!(mapper.snapshot().is_empty(), "a first scrape is a baseline");
        assert_eq!(mapper.stats().istio_baselines, 2);

        round(&mut mapper, &texts(8, 8), "2026-01-01T10:00:30Z");
        let edges = mapper.snapshot();
        let web_cart = edge(&edges, "web", "cart").unwrap_or_else(|| panic!("{edges:#?}"));
        assert_eq!(web_cart.connections, 3, "counted once, by cart's ztunnel");
        assert!(web_cart.http.is_empty());
        let stats = mapper.stats();
        assert_eq!(stats.istio_left_to_destination, 1, "web's ztunnel's count of the same");
        assert_eq!(stats.istio_uncorroborated, 0, "web's ztunnel vouches for cart's count");
        assert_eq!(stats.istio_ambient_scrapes, 4);

        // Unchanged: nothing. Then cart's ztunnel restarts (its counter drops): the new value.
        round(&mut mapper, &texts(8, 8), "2026-01-01T10:01:00Z");
        assert_eq!(edge(&mapper.snapshot(), "web", "cart").map(|e| e.connections), Some(3));
        round(&mut mapper, &texts(10, 2), "2026-01-01T10:01:30Z");
        assert_eq!(edge(&mapper.snapshot(), "web", "cart").map(|e| e.connections), Some(5));
        assert_eq!(mapper.stats().istio_counter_resets, 1);
    }

    #[test]
    fn a_sidecar_client_vouches_for_an_ambient_servers_count_and_keeps_its_own_rules() {
        let mut mapper = ambient_mesh();
        mapper.index.apply_meta("Deployment", &mk_deployment("shop", "front"));
        mapper.index.apply_meta("ReplicaSet", &mk_replicaset("shop", "front-5d9c7b", "front"));
        mapper.index.apply(
            &mk_pod("shop", "front-5d9c7b-x2x9q", &["10.244.1.9"])
                .owned_by("ReplicaSet", "front-5d9c7b")
                .on_node("node-a")
                .with_istio_sidecar(),
        );
        let sidecar = |n: u64| {
            format!(
                "istio_requests_total{{reporter=\"source\",source_workload=\"front\",source_workload_namespace=\"shop\",\
                 destination_workload=\"cart\",destination_workload_namespace=\"shop\",request_method=\"GET\",\
                 request_path=\"/api/cart\"}} {n}\n"
            )
        };
        let mesh_round = |mapper: &mut Mapper, n: u64, at: &str| {
            let sidecars: Vec<SidecarScrape> = mapper
                .index
                .istio_sidecars()
                .into_iter()
                .map(|pod| SidecarScrape { pod, metrics: Ok(crate::read_metrics(&sidecar(n))) })
                .collect();
            let proxies: Vec<AmbientScrape> = mapper
                .index
                .istio_ambient_proxies("istio-system")
                .into_iter()
                .filter(|p| p.pod.pod.name.starts_with("ztunnel-b"))
                .map(|proxy| AmbientScrape {
                    metrics: Ok(read_ambient_metrics(&tcp(
                        "destination",
                        ("shop", "front"),
                        ("shop", "cart"),
                        n,
                    ))),
                    proxy,
                })
                .collect();
            mapper.observe_mesh(&sidecars, &proxies, ts(at));
        };
        mesh_round(&mut mapper, 2, "2026-01-01T10:00:00Z");
        mesh_round(&mut mapper, 5, "2026-01-01T10:00:30Z");
        let edges = mapper.snapshot();
        let front_cart = edge(&edges, "front", "cart").unwrap_or_else(|| panic!("{edges:#?}"));
        assert_eq!(
            front_cart.connections, 3,
            "cart's ztunnel's count, vouched for by front's sidecar"
        );
        assert!(front_cart.http.is_empty(), "ztunnel sees no paths");
        let stats = mapper.stats();
        assert_eq!(
            stats.istio_uncorroborated, 1,
            "front's own count of GET /api/cart: a server without a sidecar needs a node agent's word"
        );
        assert_eq!(stats.istio_left_to_destination, 0, "ztunnel counts connections, not requests");
    }

    #[test]
    fn a_ztunnel_speaks_only_for_enrolled_pods_on_its_node_and_names_only_known_workloads() {
        let mut mapper = ambient_mesh();
        let forged = |v: u64| {
            let mut a = String::new();
            // On node-a, about cart (node-b) as the server: not its pod.
            a += &tcp("destination", ("shop", "web"), ("shop", "cart"), v);
            // legacy opted out of the mesh: its ztunnel carries nothing of it.
            a += &tcp("source", ("shop", "legacy"), ("shop", "cart"), v);
            // A workload the index does not know, either end.
            a += &tcp("source", ("shop", "ghost"), ("shop", "cart"), v);
            a += &tcp("source", ("shop", "web"), ("shop", "ghost"), v);
            // A principal of another namespace than the workload's.
            a += &tcp("source", ("shop", "web"), ("shop", "cart"), v).replace(
                "spiffe://cluster.local/ns/shop/sa/web",
                "spiffe://cluster.local/ns/bank/sa/web",
            );
            vec![("ztunnel-a", a)]
        };
        round(&mut mapper, &forged(1), "2026-01-01T10:00:00Z");
        round(&mut mapper, &forged(50), "2026-01-01T10:00:30Z");
        assert!(mapper.snapshot().is_empty(), "{:#?}", mapper.snapshot());
        let stats = mapper.stats();
        assert_eq!(stats.istio_foreign_series, 3, "{stats:#?}");
        assert_eq!(stats.istio_unknown_clients, 1);
        assert_eq!(stats.istio_unknown_targets, 1);
    }

    #[test]
    fn a_client_side_count_stands_when_the_server_is_outside_the_mesh_and_a_node_agent_saw_it() {
        let mut mapper = ambient_mesh();
        let texts = |v: u64| vec![("ztunnel-a", tcp("source", ("shop", "web"), ("data", "db"), v))];
        round(&mut mapper, &texts(2), "2026-01-01T10:00:00Z");
        round(&mut mapper, &texts(6), "2026-01-01T10:00:30Z");
        assert!(mapper.snapshot().is_empty(), "the client's word alone");
        assert_eq!(mapper.stats().istio_uncorroborated, 1);

        let connection = crate::tests::tcp("10.244.1.5", "10.96.0.8", 5432, "2026-01-01T10:00:40Z");
        mapper.observe(
            &ObservationBatch { tcp: vec![connection], ..Default::default() },
            ts("2026-01-01T10:00:45Z"),
        );
        round(&mut mapper, &texts(10), "2026-01-01T10:01:00Z");
        let edges = mapper.snapshot();
        let web_db = edge(&edges, "web", "db").unwrap_or_else(|| panic!("{edges:#?}"));
        assert_eq!(web_db.connections, 1 + 4, "the node agent's connection and ztunnel's 4");
    }

    #[test]
    fn waypoint_requests_become_paths_vouched_for_by_the_clients_ztunnel() {
        let mut mapper = ambient_mesh();
        let texts = |n: u64| {
            let mut wp = waypoint("web", "cart", "GET", "/api/cart", n);
            // legacy's calls through the waypoint: nothing on legacy's side says so.
            wp += &waypoint("legacy", "cart", "POST", "/admin/export", n);
            vec![
                // web's ztunnel: connections to the waypoint.
                ("ztunnel-a", tcp("source", ("shop", "web"), ("shop", "waypoint"), n)),
                // cart's ztunnel: connections from the waypoint.
                ("ztunnel-b", tcp("destination", ("shop", "waypoint"), ("shop", "cart"), n)),
                ("waypoint", wp),
            ]
        };
        round(&mut mapper, &texts(3), "2026-01-01T10:00:00Z");
        round(&mut mapper, &texts(7), "2026-01-01T10:00:30Z");
        let edges = mapper.snapshot();
        assert_eq!(edges.len(), 1, "{edges:#?}");
        let web_cart = edge(&edges, "web", "cart").unwrap_or_else(|| panic!("{edges:#?}"));
        assert_eq!(
            web_cart.http,
            vec![HttpResource { path: "/api/cart".into(), methods: vec!["GET".into()] }]
        );
        assert_eq!(web_cart.connections, 4, "the waypoint's requests; the hops are not calls");
        let stats = mapper.stats();
        assert_eq!(stats.istio_waypoint_hops, 2, "{stats:#?}");
        assert_eq!(stats.istio_uncorroborated, 1, "legacy's POST /admin/export");
    }
}
