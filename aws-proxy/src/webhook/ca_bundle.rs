//! The `caBundle` of the webhook's own `MutatingWebhookConfiguration`, kept equal to the CA
//! bundle (both CAs while a rotation overlaps), so the API server trusts the serving certificate.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::server::stopped;
use crate::ca::CertificateAuthority;

/// Retries of the `caBundle` patch start at this delay and double up to [`CA_BUNDLE_MAX_BACKOFF`].
const CA_BUNDLE_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const CA_BUNDLE_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Once set, the `caBundle` is checked this often (a `helm upgrade` resets it).
const CA_BUNDLE_RECHECK: Duration = Duration::from_secs(300);

/// Keeps each webhook of the `MutatingWebhookConfiguration` `name` trusting the CA bundle:
/// retries with backoff until the configuration exists, then checks again now and then, and at
/// once when the CA rotates.
pub(super) async fn keep_ca_bundle(
    api: Api<MutatingWebhookConfiguration>,
    name: String,
    mut ca: watch::Receiver<Arc<CertificateAuthority>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = CA_BUNDLE_FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        let ca_pem = ca.borrow_and_update().ca_pem().to_owned();
        let delay = match set_ca_bundle(&api, &name, &ca_pem).await {
            Ok(0) => {
                debug!(configuration = %name, "the caBundle is up to date");
                CA_BUNDLE_RECHECK
            }
            Ok(patched) => {
                info!(configuration = %name, webhooks = patched, "set the caBundle of the MutatingWebhookConfiguration to the proxy's CA");
                (failures, backoff) = (0, CA_BUNDLE_FIRST_BACKOFF);
                CA_BUNDLE_RECHECK
            }
            Err(err) => {
                failures += 1;
                let missing = matches!(&err, kube::Error::Api(status) if status.code == 404);
                let what =
                    if missing { "it does not exist (yet)" } else { "the API request failed" };
                warn!(configuration = %name, attempt = failures, retry_in = ?backoff, error = %err, "cannot set the caBundle of the MutatingWebhookConfiguration: {what}; until it is set the API server cannot call the webhook and pods are admitted unpatched");
                let delay = backoff;
                backoff = (backoff * 2).min(CA_BUNDLE_MAX_BACKOFF);
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            changed = ca.changed() => if changed.is_err() { return },
            () = stopped(&mut shutdown) => return,
        }
    }
}

/// Patches the `caBundle` of the webhooks that lack `ca_pem`; returns how many it patched.
async fn set_ca_bundle(
    api: &Api<MutatingWebhookConfiguration>,
    name: &str,
    ca_pem: &str,
) -> Result<usize, kube::Error> {
    let configuration = api.get(name).await?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut operations = Vec::new();
    for (i, webhook) in configuration.webhooks.iter().flatten().enumerate() {
        if webhook
            .client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|bundle| bundle.0 == ca_pem.as_bytes())
        {
            continue;
        }
        // The test guards against the list changing between the GET and the PATCH.
        operations.push(
            json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}),
        );
        operations.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    if operations.is_empty() {
        return Ok(0);
    }
    let patched = operations.len() / 2;
    let patch = Patch::<()>::Json(
        serde_json::from_value(Value::Array(operations)).map_err(kube::Error::SerdeError)?,
    );
    api.patch(name, &PatchParams::default(), &patch).await?;
    Ok(patched)
}
