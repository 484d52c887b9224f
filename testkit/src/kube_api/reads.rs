//! GET, LIST and WATCH: single objects, lists and watch streams replaying the change history.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::time::Instant;

use super::responses::{json_response, not_found, status, status_body};
use super::routing::Params;
use super::selection::Selection;
use super::store::{ChangeKind, Shared, Store};
use super::{BOOKMARK_INTERVAL, META_API_VERSION};

/// The watch duration when a request names no `timeoutSeconds` (the real default is 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub(super) fn get(shared: &Shared, selection: &Selection, name: &str) -> Response {
    let found = shared
        .store()
        .objects
        .get(&selection.ty.gvr)
        .and_then(|objects| objects.get(&selection.key(name)))
        .cloned();
    match found {
        Some(obj) => json_response(StatusCode::OK, &selection.render(&obj)),
        None => not_found(selection, name).into_response(),
    }
}

pub(super) fn list(shared: &Shared, selection: &Selection, params: &Params) -> Response {
    let store = shared.store();
    let requested = match parse_version(params) {
        Ok(rv) => rv,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let exact = params.get("resourceVersionMatch").is_some_and(|m| m == "Exact");
    if let Some(rv) = requested.filter(|&rv| exact && rv < store.compacted) {
        return status(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {rv} ({})", store.compacted),
        );
    }
    let items: Vec<Value> = store
        .objects
        .get(&selection.ty.gvr)
        .into_iter()
        .flat_map(|objects| objects.iter())
        .filter(|((ns, _), obj)| selection.in_namespace(ns) && selection.matches(obj))
        .map(|(_, obj)| selection.render(obj))
        .collect();
    let (api_version, kind) = if selection.metadata_only {
        (META_API_VERSION.to_owned(), "PartialObjectMetadataList".to_owned())
    } else {
        (selection.ty.gvr.api_version(), format!("{}List", selection.ty.kind))
    };
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": store.resource_version.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

/// The `resourceVersion` parameter: absent, empty and "0" all mean "any / the latest".
fn parse_version(params: &Params) -> Result<Option<u64>, String> {
    match params.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| format!("invalid resourceVersion {rv:?}")),
    }
}

pub(super) fn watch(shared: &Arc<Shared>, selection: Selection, params: &Params) -> Response {
    let requested = match parse_version(params) {
        Ok(rv) => rv,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|&t| t > 0)
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true" || b == "1");
    let initial_events = params.get("sendInitialEvents").is_some_and(|b| b == "true" || b == "1");
    let mut stream = WatchStream {
        changes: shared.changes.subscribe(),
        shutdown: shared.shutdown.subscribe(),
        shared: shared.clone(),
        selection,
        bookmarks,
        cursor: 0,
        pending: VecDeque::new(),
        deadline: Instant::now() + timeout,
        finished: false,
    };
    {
        let store = shared.store();
        stream.changes.borrow_and_update();
        match requested {
            Some(rv) if !initial_events => {
                stream.cursor = rv;
                stream.catch_up(&store);
            }
            // Start from the current state, as synthetic ADDED events.
            _ => {
                stream.cursor = store.resource_version;
                for ((ns, _), obj) in
                    store.objects.get(&stream.selection.ty.gvr).into_iter().flatten()
                {
                    if stream.selection.in_namespace(ns) && stream.selection.matches(obj) {
                        stream.push_event("ADDED", obj);
                    }
                }
            }
        }
        if bookmarks && !stream.finished {
            stream.push_bookmark(initial_events);
        }
    }
    let body = Body::from_stream(futures::stream::unfold(stream, WatchStream::next_chunk));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The body of one watch: newline-delimited JSON watch events.
struct WatchStream {
    shared: Arc<Shared>,
    selection: Selection,
    bookmarks: bool,
    /// Every change up to this version has been sent (or filtered out).
    cursor: u64,
    pending: VecDeque<Bytes>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
    finished: bool,
}

impl WatchStream {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some((Ok(line), self));
            }
            if self.finished {
                return None;
            }
            let woke_by_change = tokio::select! {
                changed = self.changes.changed() => changed.is_ok(),
                _ = tokio::time::sleep(BOOKMARK_INTERVAL), if self.bookmarks => {
                    self.push_bookmark(false);
                    continue;
                }
                _ = tokio::time::sleep_until(self.deadline) => false,
                _ = async { drop(self.shutdown.wait_for(|&stop| stop).await) } => false,
            };
            if woke_by_change {
                let shared = self.shared.clone();
                self.catch_up(&shared.store());
            } else {
                self.finished = true;
            }
        }
    }

    /// Queues every change after the cursor that this watch selects, or the 410 if the
    /// history no longer reaches back to the cursor.
    fn catch_up(&mut self, store: &Store) {
        if self.cursor < store.compacted {
            let message =
                format!("too old resource version: {} ({})", self.cursor, store.compacted);
            self.push_line("ERROR", status_body(StatusCode::GONE, "Expired", message));
            self.finished = true;
            return;
        }
        let start = store.history.partition_point(|c| c.rv <= self.cursor);
        for change in store.history.range(start..) {
            if change.gvr != self.selection.ty.gvr
                || !self.selection.in_namespace(&change.namespace)
            {
                continue;
            }
            let now = self.selection.matches(&change.object);
            let before = change.previous.as_ref().is_some_and(|p| self.selection.matches(p));
            match (change.kind, before, now) {
                (ChangeKind::Added, _, true) => self.push_event("ADDED", &change.object),
                (ChangeKind::Deleted, _, true) => self.push_event("DELETED", &change.object),
                (ChangeKind::Modified, true, true) => self.push_event("MODIFIED", &change.object),
                (ChangeKind::Modified, false, true) => self.push_event("ADDED", &change.object),
                (ChangeKind::Modified, true, false) => {
                    let mut left = change.previous.clone().unwrap_or_default();
                    left["metadata"]["resourceVersion"] = change.rv.to_string().into();
                    self.push_event("DELETED", &left);
                }
                _ => {}
            }
        }
        self.cursor = store.resource_version;
    }

    fn push_event(&mut self, event_type: &str, obj: &Value) {
        let rendered = self.selection.render(obj);
        self.push_line(event_type, rendered);
    }

    fn push_bookmark(&mut self, initial_events_end: bool) {
        let (api_version, kind) = if self.selection.metadata_only {
            (META_API_VERSION.to_owned(), "PartialObjectMetadata".to_owned())
        } else {
            (self.selection.ty.gvr.api_version(), self.selection.ty.kind.clone())
        };
        let mut metadata = json!({"resourceVersion": self.cursor.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.push_line(
            "BOOKMARK",
            json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}),
        );
    }

    fn push_line(&mut self, event_type: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
            .expect("JSON values serialize");
        line.push(b'\n');
        self.pending.push_back(line.into());
    }
}
