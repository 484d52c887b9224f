//! What the tests against Otterize's reference fixtures (`../shared/reference/otterize/`) share:
//! reading the fixtures, the clock they run on, and the HTTP calls a mapper holds.
#![allow(dead_code)]

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use mapper_core::fixtures::{ts, CREATED};
use mapper_core::istio::RequestSample;
use mapper_core::{Mapper, SidecarMetrics};
use model::Target;
use serde_json::Value;

/// A fixture's text, by its path under `reference/otterize/`.
pub fn fixture_text(relative: &str) -> String {
    let path = testkit::need::shared_file(&format!("reference/otterize/{relative}"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A JSON fixture, by its path under `reference/otterize/`.
pub fn fixture_json(relative: &str) -> Value {
    serde_json::from_str(&fixture_text(relative))
        .unwrap_or_else(|e| panic!("{relative} is not JSON: {e}"))
}

/// A fixture's string; panics showing what is there instead.
pub fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, found {v}"))
}

/// `offset_seconds` after the fixtures' creation time.
pub fn at(offset_seconds: i64) -> DateTime<Utc> {
    ts(CREATED) + TimeDelta::seconds(offset_seconds)
}

/// A call with HTTP detail: client, server, path, methods.
pub type HttpCall = (String, String, String, Vec<String>);

/// The HTTP calls the mapper holds (a Kubernetes server by its workload's name).
pub fn http_edges(mapper: &Mapper) -> BTreeSet<HttpCall> {
    mapper
        .snapshot()
        .iter()
        .filter(|e| !e.http.is_empty())
        .flat_map(|e| {
            let server = match &e.target {
                Target::Kubernetes(w) => w.name.clone(),
                other => format!("{other:?}"),
            };
            e.http.iter().map(move |h| {
                (e.client.name.clone(), server.clone(), h.path.clone(), h.methods.clone())
            })
        })
        .collect()
}

/// The calls a round of Otterize's Istio watcher cases expects (`expected_connections`), the
/// source workload in lower case as Kubernetes names it.
pub fn expected_http(round: &Value) -> BTreeSet<HttpCall> {
    round["expected_connections"]
        .as_array()
        .expect("expected connections")
        .iter()
        .map(|c| {
            (
                str_of(&c["source_workload"]).to_lowercase(),
                str_of(&c["destination_workload"]).to_owned(),
                str_of(&c["request_path"]).to_owned(),
                vec![str_of(&c["request_method"]).to_owned()],
            )
        })
        .collect()
}

/// `metrics` read every series of a captured scrape's expectation (`series`: reporter,
/// workloads, the namespaces and service where given, value), in order, and no line was
/// malformed.
pub fn assert_reads_as_expected(metrics: &SidecarMetrics, expected: &Value) {
    let series = expected["series"].as_array().expect("series");
    assert_eq!(metrics.malformed_lines, 0);
    assert_eq!(metrics.requests.len(), series.len());
    for (read, want) in metrics.requests.iter().zip(series) {
        assert_sample(read, want);
    }
}

fn assert_sample(read: &RequestSample, want: &Value) {
    let s = &read.series;
    assert_eq!(s.reporter, str_of(&want["reporter"]));
    assert_eq!(s.source_workload, str_of(&want["source_workload"]));
    assert_eq!(s.destination_workload, str_of(&want["destination_workload"]));
    for (field, value) in [
        ("source_workload_namespace", &s.source_workload_namespace),
        ("destination_workload_namespace", &s.destination_workload_namespace),
        ("destination_service_name", &s.destination_service_name),
    ] {
        if let Some(w) = want[field].as_str() {
            assert_eq!(value, w, "{field}");
        }
    }
    assert_eq!(read.value, want["value"].as_f64().expect("a value"));
}
