//! Kubernetes watchers keeping the mapper's index current: full objects where the mapper reads
//! their spec or status, metadata only (owner references, labels, annotations) elsewhere.

use std::fmt::Debug;
use std::sync::atomic::Ordering;
use std::sync::Arc;

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
    let kind = K::kind(&());
    let mut stream = watcher(api).boxed();
    let mut initial: Vec<K> = Vec::new();
    let mut synced = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => initial.clear(),
            Ok(Event::InitApply(obj)) => initial.push(obj),
            Ok(Event::InitDone) => {
                mapper.lock().index.reset(&initial);
                tracing::info!(%kind, objects = initial.len(), "watch synced");
                initial.clear();
                mark_synced(&telemetry.watches, &mut synced);
            }
            Ok(Event::Apply(obj)) => mapper.lock().index.apply(&obj),
            Ok(Event::Delete(obj)) => mapper.lock().index.delete(&obj),
            Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

async fn watch_meta<K>(
    api: Api<PartialObjectMeta<K>>,
    mapper: SharedMapper,
    telemetry: Arc<Telemetry>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).to_string();
    let mut stream = watcher(api).boxed();
    let mut initial = Vec::new();
    let mut synced = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => initial.clear(),
            Ok(Event::InitApply(obj)) => initial.push(obj.metadata),
            Ok(Event::InitDone) => {
                mapper.lock().index.reset_meta(&kind, &initial);
                tracing::info!(%kind, objects = initial.len(), "watch synced");
                initial.clear();
                mark_synced(&telemetry.watches, &mut synced);
            }
            Ok(Event::Apply(obj)) => mapper.lock().index.apply_meta(&kind, &obj.metadata),
            Ok(Event::Delete(obj)) => mapper.lock().index.delete_meta(&kind, &obj.metadata),
            Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff"),
        }
    }
}

fn watcher<K>(api: Api<K>) -> impl futures::Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watcher::watcher(api, watcher::Config::default()).default_backoff()
}

fn mark_synced(progress: &WatchProgress, synced: &mut bool) {
    if !std::mem::replace(synced, true) {
        progress.synced.fetch_add(1, Ordering::Relaxed);
    }
}
