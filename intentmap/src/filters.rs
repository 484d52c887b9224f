//! Filters the CLI applies to the mapper's edges itself (the mapper applies `-n`, `--server`
//! and `--exclude-labels`).

use model::{Edge, Target};

/// At most this many `--exclude-services` names.
pub const MAX_EXCLUDED_SERVICES: usize = 1_000;

/// `--exclude-services NAME[,NAME...]`: as Otterize's CLI, leaves out the named workloads (or
/// Services) both as clients and as targets. A name is `name` (in any namespace) or
/// `name.namespace`. A client whose every target is left out disappears.
///
/// Unlike the other filters this removes targets from the clients that remain: applying their
/// ClientIntents takes the access to the excluded targets away (which is what it is for: leaving
/// out, say, a metrics scraper that is allowed some other way).
pub fn exclude_services(edges: Vec<Edge>, names: &[String]) -> Vec<Edge> {
    if names.is_empty() {
        return edges;
    }
    let excluded = |namespace: &str, name: &str| {
        names.iter().any(|n| match n.rsplit_once('.') {
            Some((n_name, n_ns)) if n_name == name && n_ns == namespace => true,
            _ => n == name,
        })
    };
    edges
        .into_iter()
        .filter(|e| !excluded(&e.client.namespace, &e.client.name))
        .filter(|e| match &e.target {
            Target::Kubernetes(w) | Target::Kafka(w) => !excluded(&w.namespace, &w.name),
            Target::Service(s) => !excluded(&s.namespace, &s.name),
            Target::Internet(_) | Target::Aws(_) | Target::Incoming(_) => true,
        })
        .collect()
}

/// Checks `--exclude-services` names: Kubernetes names (lower-case letters, digits, `-`, `.`;
/// workload names may have dots, so `a.b` is both the name `a.b` and `a` in namespace `b`).
pub fn check_service_names(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_EXCLUDED_SERVICES {
        return Err(format!(
            "--exclude-services takes at most {MAX_EXCLUDED_SERVICES} names, not {}",
            names.len()
        ));
    }
    for name in names {
        let valid = !name.is_empty()
            && name.len() <= 317
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !valid {
            return Err(format!(
                "{name:?} is not a workload name for --exclude-services: give NAME or NAME.NAMESPACE (lower-case letters, digits, '-' and '.'), e.g. --exclude-services prometheus,redis.shop"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use model::{InternetTarget, WorkloadRef};

    fn edge(client: (&str, &str), target: Target) -> Edge {
        Edge {
            client: WorkloadRef::new(client.0, client.1, None),
            target,
            ports: vec![],
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            connections: 1,
            http: vec![],
            kafka: vec![],
            bytes: None,
        }
    }

    fn names(edges: &[Edge]) -> Vec<String> {
        edges.iter().map(|e| format!("{} -> {:?}", e.client, e.key().target_name)).collect()
    }

    #[test]
    fn excluded_services_go_as_clients_and_as_targets() {
        let k = |ns: &str, n: &str| Target::Kubernetes(WorkloadRef::new(ns, n, None));
        let edges = vec![
            edge(("shop", "frontend"), k("shop", "cart")),
            edge(("shop", "frontend"), k("monitoring", "prometheus")),
            edge(("monitoring", "prometheus"), k("shop", "frontend")),
            edge(("shop", "cart"), k("shop", "redis")),
            edge(("other", "cart"), k("other", "redis")),
            edge(("shop", "frontend"), Target::Internet(InternetTarget::default())),
        ];
        let kept = exclude_services(edges.clone(), &["prometheus".into()]);
        assert_eq!(
            names(&kept),
            [
                "frontend.shop -> \"cart\"",
                "cart.shop -> \"redis\"",
                "cart.other -> \"redis\"",
                "frontend.shop -> \"\""
            ]
        );
        // name.namespace leaves the other namespace's workload of that name alone.
        let kept = exclude_services(edges.clone(), &["cart.shop".into()]);
        assert_eq!(kept.len(), 4);
        assert!(kept.iter().all(|e| e.client.name != "cart" || e.client.namespace == "other"));
        assert_eq!(exclude_services(edges.clone(), &[]), edges);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_service_names(&["redis.shop".into(), "app_4_2".into()]).is_ok());
        assert!(check_service_names(&["Redis".into()]).unwrap_err().contains("NAME.NAMESPACE"));
        assert!(check_service_names(&["".into()]).is_err());
        assert!(check_service_names(&vec!["a".to_owned(); 1001]).is_err());
    }
}
