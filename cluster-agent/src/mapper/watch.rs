//! Kubernetes watchers keeping the mapper's index current: full objects where the mapper reads
//! their spec or status, metadata only (owner references, labels, annotations) elsewhere.

use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Resource};
use mapper_core::Indexed;
use serde::de::DeserializeOwned;

use super::telemetry::{Telemetry, WatchProgress};
use super::SharedMapper;

/// Starts every watcher; they run until the process ends, re-listing after errors with backoff.
pub fn spawn_all(client: kube::Client, mapper: SharedMapper, telemetry: Arc<Telemetry>) {
    macro_rules! full {
        ($($k:ty),*) => {$(
            telemetry.watches.total.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(watch_full::<$k>(Api::all(client.clone()), mapper.clone(), telemetry.clone()));
        )*};
    }
    macro_rules! meta {
        ($($k:ty),*) => {$(
            telemetry.watches.total.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(watch_meta::<$k>(Api::all(client.clone()), mapper.clone(), telemetry.clone()));
        )*};
    }
    full!(Pod, Service, EndpointSlice, Node, Ingress);
    meta!(ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, CronJob, Namespace);
}

async fn watch_full<K>(api: Api<K>, mapper: SharedMapper, telemetry: Arc<Telemetry>)
where
    K: Indexed
        + Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).to_string();
    let mut initial: Vec<K> = Vec::new();
    follow(watcher(api), &kind, &telemetry.watches, |event| match event {
        Event::Init => initial.clear(),
        Event::InitApply(obj) => initial.push(obj),
        Event::InitDone => {
            mapper.lock().index.reset(&initial);
            tracing::info!(%kind, objects = initial.len(), "watch synced");
            initial.clear();
        }
        Event::Apply(obj) => mapper.lock().index.apply(&obj),
        Event::Delete(obj) => mapper.lock().index.delete(&obj),
    })
    .await;
}

async fn watch_meta<K>(
    api: Api<PartialObjectMeta<K>>,
    mapper: SharedMapper,
    telemetry: Arc<Telemetry>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).to_string();
    let mut initial = Vec::new();
    follow(watcher(api), &kind, &telemetry.watches, |event| match event {
        Event::Init => initial.clear(),
        Event::InitApply(obj) => initial.push(obj.metadata),
        Event::InitDone => {
            mapper.lock().index.reset_meta(&kind, &initial);
            tracing::info!(%kind, objects = initial.len(), "watch synced");
            initial.clear();
        }
        Event::Apply(obj) => mapper.lock().index.apply_meta(&kind, &obj.metadata),
        Event::Delete(obj) => mapper.lock().index.delete_meta(&kind, &obj.metadata),
    })
    .await;
}

/// How long a broken watch must go without another error to count as resumed when nothing
/// changed meanwhile (a quiet kind resumes without an event): longer than kube's longest
/// back-off (30 s) plus a connection attempt's timeout (30 s), so a watch still failing has
/// failed again by then.
const QUIET_RESUME: Duration = Duration::from_secs(90);

/// Feeds a watch's events to `handle` and keeps its part of [`WatchProgress`]: synced after its
/// first list, broken from an error until it delivers a change, finishes a re-list, or stays
/// quiet for [`QUIET_RESUME`].
async fn follow<K>(
    stream: impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send,
    kind: &str,
    progress: &WatchProgress,
    mut handle: impl FnMut(Event<K>),
) {
    let mut stream = std::pin::pin!(stream);
    let (mut synced, mut broken) = (false, false);
    loop {
        let next = if broken {
            match tokio::time::timeout(QUIET_RESUME, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    mark(&progress.broken, &mut broken, false);
                    tracing::info!(%kind, "watch resumed (no error since)");
                    continue;
                }
            }
        } else {
            stream.next().await
        };
        let Some(event) = next else { break };
        match event {
            Err(e) => {
                mark(&progress.broken, &mut broken, true);
                tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff");
            }
            Ok(event) => {
                let settled = matches!(event, Event::InitDone | Event::Apply(_) | Event::Delete(_));
                let listed = matches!(event, Event::InitDone);
                handle(event);
                if listed && !synced {
                    synced = true;
                    progress.synced.fetch_add(1, Ordering::Relaxed);
                }
                if settled && broken {
                    mark(&progress.broken, &mut broken, false);
                    tracing::info!(%kind, "watch resumed");
                }
            }
        }
    }
}

/// Sets `flag` to `to`, moving `count` with it.
fn mark(count: &AtomicUsize, flag: &mut bool, to: bool) {
    if std::mem::replace(flag, to) != to {
        if to {
            count.fetch_add(1, Ordering::Relaxed);
        } else {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}
