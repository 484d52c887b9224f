//! The CA ConfigMap ([`super::DEFAULT_CA_CONFIGMAP`]) in each opted-in namespace: created when a
//! labelled pod is admitted there, and brought up to date in every opted-in namespace at start
//! and whenever the CA rotates. Only opted-in namespaces are ever read or written (the chart's
//! Role per namespace allows nothing else).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{debug, info, warn};

use super::{BUNDLE_KEY, CA_KEY};

/// How long a namespace's ConfigMap is trusted to be right before it is checked again (someone
/// may have deleted it).
const CONFIGMAP_RECHECK: Duration = Duration::from_secs(600);

/// Keeps the CA ConfigMap right in the opted-in namespaces.
pub(super) struct CaConfigMaps {
    /// `None`: no API access, the ConfigMaps are someone else's job.
    client: Option<kube::Client>,
    pub name: String,
    roots: String,
    data: Mutex<BTreeMap<String, String>>,
    /// Namespaces whose ConfigMap was found or made right, and when.
    ensured: Mutex<HashMap<String, Instant>>,
    /// One writer per namespace at a time, so a sweep and an admission do not both write.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl CaConfigMaps {
    pub fn new(
        client: Option<kube::Client>,
        name: &str,
        ca_pem: &str,
        system_roots: &Path,
    ) -> Self {
        let roots = match std::fs::read_to_string(system_roots) {
            Ok(roots) => roots,
            Err(err) => {
                warn!(path = %system_roots.display(), %err, "no system roots: {BUNDLE_KEY} will hold only the proxy's CA, and TLS to hosts the proxy does not intercept will fail in patched pods");
                String::new()
            }
        };
        let maps = Self {
            client,
            name: name.to_owned(),
            roots,
            data: Mutex::default(),
            ensured: Mutex::default(),
            locks: Mutex::default(),
        };
        maps.set_ca(ca_pem);
        maps
    }

    /// The CA changed: every namespace's ConfigMap is checked again.
    pub fn set_ca(&self, ca_pem: &str) {
        let ca_pem = format!("{}\n", ca_pem.trim_end());
        let data =
            [(CA_KEY.to_owned(), ca_pem.clone()), (BUNDLE_KEY.to_owned(), ca_pem + &self.roots)]
                .into_iter()
                .collect();
        *self.data.lock().unwrap_or_else(PoisonError::into_inner) = data;
        self.ensured.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }

    /// Makes sure the ConfigMap exists with the right data in `namespace` (only updating an
    /// existing one unless `create`); cached, so most calls make no API request.
    pub async fn ensure(&self, namespace: &str, create: bool) -> Result<(), kube::Error> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(namespace.to_owned())
            .or_default()
            .clone();
        let _one_writer = lock.lock().await;
        let fresh = self
            .ensured
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .is_some_and(|at| at.elapsed() < CONFIGMAP_RECHECK);
        if fresh {
            return Ok(());
        }
        let data = self.data.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let pp =
            PostParams { field_manager: Some("aws-proxy".to_owned()), ..PostParams::default() };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let written = match api.get_opt(&self.name).await? {
                Some(existing) if existing.data.as_ref() == Some(&data) => Ok("up to date"),
                Some(mut existing) => {
                    existing.data = Some(data.clone());
                    api.replace(&self.name, &pp, &existing).await.map(|_| "replaced")
                }
                None if !create => return Ok(()),
                None => {
                    let labels = [(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "intentmap-aws-proxy".to_owned(),
                    )]
                    .into_iter()
                    .collect();
                    let metadata = ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(namespace.to_owned()),
                        labels: Some(labels),
                        ..ObjectMeta::default()
                    };
                    let configmap =
                        ConfigMap { metadata, data: Some(data.clone()), ..ConfigMap::default() };
                    api.create(&pp, &configmap).await.map(|_| "created")
                }
            };
            match written {
                Ok(what) => {
                    info!(configmap = %format!("{namespace}/{}", self.name), "CA ConfigMap {what}");
                    self.ensured
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(namespace.to_owned(), Instant::now());
                    return Ok(());
                }
                // Someone else wrote it in between (another replica): look again.
                Err(kube::Error::Api(status)) if status.code == 409 && attempts < 3 => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Brings the existing ConfigMaps of `namespaces` up to date (after a start or a rotation).
    pub async fn sweep(&self, namespaces: &BTreeSet<String>) {
        if self.client.is_none() {
            return;
        }
        for namespace in namespaces {
            match self.ensure(namespace, false).await {
                Ok(()) => debug!(namespace, "checked the CA ConfigMap"),
                Err(err) => {
                    warn!(namespace, configmap = %self.name, error = %err, "cannot bring the CA ConfigMap up to date (RBAC needs get and update on it in each opted-in namespace)")
                }
            }
        }
    }
}
