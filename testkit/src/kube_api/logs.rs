//! The pod log subresource, `GET /api/v1/namespaces/{ns}/pods/{name}/log`, as the kubelet
//! serves it through the API server: timestamps, `sinceTime`/`sinceSeconds`, `tailLines`,
//! `follow`, and the cuts tests ask for.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::responses::status;
use super::routing::Params;
use super::store::{Gvr, Shared};

/// `/api/v1/namespaces/{ns}/pods/{name}/log`.
pub(super) fn log_path(path: &str) -> Option<(&str, &str)> {
    match path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", pod, "log"]
            if !namespace.is_empty() && !pod.is_empty() =>
        {
            Some((namespace, pod))
        }
        _ => None,
    }
}

pub(super) fn pod_log(
    shared: &Arc<Shared>,
    namespace: &str,
    pod: &str,
    params: &Params,
) -> Response {
    let flag = |name: &str| params.get(name).is_some_and(|v| v == "true" || v == "1");
    let key = (namespace.to_owned(), pod.to_owned());
    let pods = Gvr { group: String::new(), version: "v1".into(), plural: "pods".into() };
    let mut store = shared.store();
    let Some(object) = store.object(&pods, &key) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{pod}\" not found"));
    };
    let containers: Vec<String> = object["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .map(str::to_owned)
        .collect();
    match params.get("container") {
        Some(container) if !containers.contains(container) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container {container} is not valid for pod {pod}"),
            );
        }
        None if containers.len() > 1 => {
            let choices = containers.join(" ");
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "a container name must be specified for pod {pod}, choose one of: [{choices}]"
                ),
            );
        }
        _ => {}
    }
    if flag("previous") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("previous terminated container in pod \"{pod}\" not found"),
        );
    }
    if params.contains_key("limitBytes") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the stand-in API server does not support limitBytes".into(),
        );
    }
    let since = match (params.get("sinceTime"), params.get("sinceSeconds")) {
        (Some(_), Some(_)) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "at most one of sinceTime or sinceSeconds may be specified".into(),
            )
        }
        (Some(time), None) => match DateTime::parse_from_rfc3339(time) {
            Ok(time) => Some(time.with_timezone(&Utc)),
            Err(err) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid sinceTime {time:?}: {err}"),
                )
            }
        },
        (None, Some(seconds)) => match seconds.parse::<i64>() {
            Ok(seconds) if seconds > 0 => Some(Utc::now() - chrono::TimeDelta::seconds(seconds)),
            _ => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid sinceSeconds {seconds:?}"),
                )
            }
        },
        (None, None) => None,
    };
    let tail = match params.get("tailLines").map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(tail)) => Some(tail),
        Some(Err(_)) => {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "invalid tailLines".into())
        }
    };
    let follow = flag("follow");
    let log = store.pod_logs.entry(key.clone()).or_default();
    let next = tail.map_or(0, |tail| log.entries.len().saturating_sub(tail));
    let cuts_seen = log.cuts.len();
    if follow {
        log.followers += 1;
    }
    drop(store);
    let stream = LogStream {
        shared: shared.clone(),
        key,
        next,
        since,
        timestamps: flag("timestamps"),
        follow,
        cuts_seen,
        log_changes: shared.log_changes.subscribe(),
        changes: shared.changes.subscribe(),
        shutdown: shared.shutdown.subscribe(),
        finished: false,
    };
    let body = Body::from_stream(futures::stream::unfold(stream, LogStream::next_chunk));
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The body of one log request.
struct LogStream {
    shared: Arc<Shared>,
    key: (String, String),
    /// The next entry to consider.
    next: usize,
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    follow: bool,
    /// Cuts added before this stream opened do not apply to it.
    cuts_seen: usize,
    log_changes: watch::Receiver<u64>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    finished: bool,
}

impl LogStream {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if self.finished {
                return None;
            }
            self.log_changes.borrow_and_update();
            self.changes.borrow_and_update();
            let (chunk, done) = self.take();
            if done {
                self.finished = true;
            }
            if !chunk.is_empty() {
                return Some((Ok(chunk.into()), self));
            }
            if done {
                return None;
            }
            tokio::select! {
                _ = self.log_changes.changed() => {}
                _ = self.changes.changed() => {}
                _ = async { drop(self.shutdown.wait_for(|&stop| stop).await) } => self.finished = true,
            }
        }
    }

    /// What to send now, and whether the stream ends after it.
    fn take(&mut self) -> (Vec<u8>, bool) {
        let shared = self.shared.clone();
        let store = shared.store();
        let pods = Gvr { group: String::new(), version: "v1".into(), plural: "pods".into() };
        let exists = store.object(&pods, &self.key).is_some();
        let Some(log) = store.pod_logs.get(&self.key) else {
            return (Vec::new(), !self.follow || !exists);
        };
        let cut = if self.follow { log.cuts.get(self.cuts_seen) } else { None };
        let until = cut.map_or(log.entries.len(), |c| c.entry.min(log.entries.len()));
        let mut chunk = Vec::new();
        while self.next < until {
            let (at, line) = &log.entries[self.next];
            self.next += 1;
            if self.since.is_none_or(|since| *at >= since) {
                chunk.extend_from_slice(&self.format(*at, line));
            }
        }
        if let Some(cut) = cut {
            if let Some((at, line)) = log
                .entries
                .get(cut.entry)
                .filter(|(at, _)| self.since.is_none_or(|since| *at >= since))
            {
                let whole = self.format(*at, line);
                chunk.extend_from_slice(&whole[..cut.sent.min(whole.len() - 1)]);
            }
            return (chunk, true);
        }
        (chunk, !self.follow || !exists)
    }

    fn format(&self, at: DateTime<Utc>, line: &str) -> Vec<u8> {
        let mut out =
            if self.timestamps { format!("{} ", kubelet_timestamp(at)) } else { String::new() };
        out.push_str(line);
        out.push('\n');
        out.into_bytes()
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if self.follow {
            if let Some(log) = self.shared.store().pod_logs.get_mut(&self.key) {
                log.followers = log.followers.saturating_sub(1);
            }
        }
    }
}

/// Go's `time.RFC3339Nano`, as the kubelet writes it: trailing zeros of the fraction dropped.
fn kubelet_timestamp(at: DateTime<Utc>) -> String {
    let seconds = at.format("%Y-%m-%dT%H:%M:%S");
    match at.timestamp_subsec_nanos() {
        0 => format!("{seconds}Z"),
        nanos => format!("{seconds}.{}Z", format!("{nanos:09}").trim_end_matches('0')),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::kube_api::FakeApiServer;

    #[test]
    fn log_timestamps_are_written_as_the_kubelet_writes_them() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(kubelet_timestamp(at("2023-03-12T13:51:55Z")), "2023-03-12T13:51:55Z");
        assert_eq!(kubelet_timestamp(at("2023-03-12T13:51:55.904Z")), "2023-03-12T13:51:55.904Z");
        assert_eq!(
            kubelet_timestamp(at("2023-03-12T13:51:55.000012300Z")),
            "2023-03-12T13:51:55.0000123Z"
        );
        assert_eq!(
            log_path("/api/v1/namespaces/kafka/pods/broker-0/log"),
            Some(("kafka", "broker-0"))
        );
        assert_eq!(log_path("/api/v1/namespaces/kafka/pods/broker-0"), None);
    }

    /// The log endpoint through the real `kube` client, as a log follower uses it.
    #[tokio::test]
    async fn pod_logs_follow_resume_and_cut_as_asked() {
        use futures::{AsyncBufReadExt as _, AsyncReadExt as _};
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::LogParams;

        let api = FakeApiServer::start().await.unwrap();
        let mut pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "broker-0", "namespace": "kafka"}, "spec": {"containers": [{"name": "kafka"}, {"name": "exporter"}]}}),
        )
        .unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        api.append_log("kafka", "broker-0", at("2026-01-01T10:00:00Z"), "first");
        api.append_log("kafka", "broker-0", at("2026-01-01T10:00:01.5Z"), "second");
        let pods: kube::Api<Pod> = kube::Api::namespaced(api.client(), "kafka");
        let params = |container: &str| LogParams {
            container: Some(container.into()),
            timestamps: true,
            ..LogParams::default()
        };
        assert!(pods.logs("broker-0", &params("kafka")).await.is_err(), "no such pod yet");
        api.apply(&pod);
        let refused = pods.logs("broker-0", &LogParams::default()).await.unwrap_err().to_string();
        assert!(refused.contains("a container name must be specified"), "{refused}");
        assert!(pods.logs("broker-0", &params("sidecar")).await.is_err());
        assert_eq!(
            pods.logs("broker-0", &params("kafka")).await.unwrap(),
            "2026-01-01T10:00:00Z first\n2026-01-01T10:00:01.5Z second\n"
        );
        let since = LogParams {
            since_time: Some("2026-01-01T10:00:01Z".parse().unwrap()),
            ..params("kafka")
        };
        assert_eq!(pods.logs("broker-0", &since).await.unwrap(), "2026-01-01T10:00:01.5Z second\n");
        let tail = LogParams { tail_lines: Some(1), timestamps: false, ..params("kafka") };
        assert_eq!(pods.logs("broker-0", &tail).await.unwrap(), "second\n");

        // Following: new lines as they come, then a cut in the middle of one.
        let follow = LogParams { follow: true, tail_lines: Some(0), ..params("kafka") };
        let mut stream = pods.log_stream("broker-0", &follow).await.unwrap();
        assert_eq!(api.log_streams("kafka", "broker-0"), 1);
        api.append_log("kafka", "broker-0", at("2026-01-01T10:00:02Z"), "third");
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert_eq!(line, "2026-01-01T10:00:02Z third\n");
        api.append_log_and_cut("kafka", "broker-0", at("2026-01-01T10:00:03Z"), "fourth", 24);
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "2026-01-01T10:00:03Z fou", "the stream ends in the middle of the line");
        drop(stream);
        let since = LogParams {
            since_time: Some("2026-01-01T10:00:03Z".parse().unwrap()),
            ..params("kafka")
        };
        assert_eq!(
            pods.logs("broker-0", &since).await.unwrap(),
            "2026-01-01T10:00:03Z fourth\n",
            "the line is whole for the next request"
        );

        // A follow stream ends when the pod is deleted.
        let mut stream = pods.log_stream("broker-0", &follow).await.unwrap();
        pod.metadata.resource_version = None;
        api.delete(&pod);
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "");
    }
}
