//! The admission webhook: the patch it computes for real `AdmissionReview`s (applied with the
//! json-patch crate and read back as a `Pod`), then the server over real HTTPS against the
//! stand-in Kubernetes API server.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use aws_proxy::ca::CertificateAuthority;
use aws_proxy::webhook::{
    mutate, MutationConfig, Webhook, WebhookArgs, WebhookError, INJECTED_ANNOTATION,
};
use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EnvVar, KeyToPath, PodDNSConfig, PodDNSConfigOption,
    PodSpec, ProjectedVolumeSource, ResourceRequirements, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};
use k8s_openapi::api::core::v1::{ConfigMapProjection, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use testkit::kube_api::FakeApiServer;

const DNS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 53));
const CLUSTER_DNS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 10));
const SERVICE_HOST: &str = "aws-proxy.intentmap.svc";
const BUNDLE: &str = "/etc/intentmap/aws-ca/bundle.crt";
const CA_CRT: &str = "/etc/intentmap/aws-ca/ca.crt";

// === Pods and reviews as the API server sends them ===

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

/// A pod as a ReplicaSet controller creates it, after the built-in admission plugins ran (the
/// service account token volume is already there).
fn replicaset_pod(pod_labels: &[(&str, &str)]) -> Pod {
    let token_volume = Volume {
        name: "kube-api-access-x7k2p".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(420),
            default_user: None,
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            ..Default::default()
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
            ]),
        }),
        ..Volume::default()
    };
    let app = Container {
        name: "app".into(),
        image: Some("registry.example/shop/orders:1.4.2".into()),
        image_pull_policy: Some("IfNotPresent".into()),
        ports: Some(vec![ContainerPort {
            container_port: 8080,
            name: Some("http".into()),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(vec![env("AWS_REGION", "eu-west-1"), env("QUEUE", "orders")]),
        resources: Some(ResourceRequirements {
            requests: Some(
                [
                    ("cpu".to_owned(), Quantity("100m".into())),
                    ("memory".to_owned(), Quantity("128Mi".into())),
                ]
                .into_iter()
                .collect(),
            ),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "kube-api-access-x7k2p".into(),
            mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        termination_message_path: Some("/dev/termination-log".into()),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some("orders-7d4b9c6f5-".into()),
            namespace: Some("shop".into()),
            labels: Some(labels(
                &[&[("app", "orders"), ("pod-template-hash", "7d4b9c6f5")], pod_labels].concat(),
            )),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "orders-7d4b9c6f5".into(),
                uid: "0f3c2a4e-1b7d-4c55-9e0a-6a1b2c3d4e5f".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![app],
            dns_policy: Some("ClusterFirst".into()),
            enable_service_links: Some(true),
            preemption_policy: Some("PreemptLowerPriority".into()),
            priority: Some(0),
            restart_policy: Some("Always".into()),
            scheduler_name: Some("default-scheduler".into()),
            service_account_name: Some("orders".into()),
            termination_grace_period_seconds: Some(30),
            volumes: Some(vec![token_volume]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

fn labelled_pod() -> Pod {
    replicaset_pod(&[("intentmap.dev/aws-visibility", "true")])
}

fn review_of(object: Value, kind: (&str, &str, &str), resource: &str, operation: &str) -> Value {
    let (group, version, kind) = kind;
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": resource},
            "requestKind": {"group": group, "version": version, "kind": kind},
            "requestResource": {"group": group, "version": version, "resource": resource},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "b2d0a5e2-5f8c-4a8e-9d51-3c2f1e0a9b77",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

fn pod_review(pod: &Pod) -> Value {
    review_of(
        serde_json::to_value(pod).expect("a Pod serializes"),
        ("", "v1", "Pod"),
        "pods",
        "CREATE",
    )
}

fn config() -> MutationConfig {
    MutationConfig::new(DNS_IP, &["shop"])
}

/// The JSON patch in a review response, if any, checking the response's shape.
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    assert_eq!(response["apiVersion"], "admission.k8s.io/v1", "{response}");
    assert_eq!(response["kind"], "AdmissionReview", "{response}");
    assert_eq!(
        response["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002",
        "the uid is echoed: {response}"
    );
    assert_eq!(response["response"]["allowed"], true, "{response}");
    let patch = response["response"].get("patch")?;
    assert_eq!(response["response"]["patchType"], "JSONPatch", "{response}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch.as_str().expect("the patch is a base64 string"))
        .expect("the patch is base64");
    Some(serde_json::from_slice(&bytes).expect("the patch is an RFC 6902 JSON patch"))
}

/// Runs the webhook on `pod` and applies its patch as the API server would.
fn admit(pod: &Pod, config: &MutationConfig) -> (Pod, Option<json_patch::Patch>) {
    let response = mutate(&pod_review(pod), config).expect("a well-formed review is answered");
    let patch = patch_of(&response);
    let mut doc = serde_json::to_value(pod).unwrap();
    if let Some(patch) = &patch {
        json_patch::patch(&mut doc, patch).unwrap_or_else(|err| {
            panic!("the API server could not apply the patch: {err}\n{patch:?}")
        });
    }
    let patched: Pod = serde_json::from_value(doc).expect("the patched object is still a Pod");
    (patched, patch)
}

fn assert_unchanged_on_second_admission(patched: &Pod, config: &MutationConfig) {
    let (again, patch) = admit(patched, config);
    assert!(
        patch.as_ref().is_none_or(|p| p.0.is_empty()),
        "a patched pod is not patched again: {patch:?}"
    );
    assert_eq!(&again, patched);
}

fn env_of(container: &Container) -> BTreeMap<String, String> {
    container
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

fn assert_has_ca(container: &Container) {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "intentmap-aws-ca")
        .unwrap_or_else(|| panic!("{} has no CA mount", container.name));
    assert_eq!((mount.mount_path.as_str(), mount.read_only), ("/etc/intentmap/aws-ca", Some(true)));
    let env = env_of(container);
    for name in [
        "AWS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
    ] {
        assert!(env.contains_key(name), "{} lacks {name}: {env:?}", container.name);
    }
}

fn spec(pod: &Pod) -> &PodSpec {
    pod.spec.as_ref().expect("the pod has a spec")
}

// === The patch ===

#[test]
fn a_labelled_pod_gets_the_ca_the_variables_our_dns_and_the_annotation() {
    let pod = labelled_pod();
    let (patched, patch) = admit(&pod, &config());
    assert!(patch.is_some(), "a labelled pod is patched");
    let spec = spec(&patched);

    let volume = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "intentmap-aws-ca")
        .expect("the CA volume was added");
    assert_eq!(volume.config_map.as_ref().map(|c| c.name.as_str()), Some("intentmap-aws-ca"));
    assert_eq!(spec.volumes.as_ref().unwrap().len(), 2, "the token volume stays");

    let app = &spec.containers[0];
    assert_has_ca(app);
    assert_eq!(app.volume_mounts.as_ref().unwrap().len(), 2, "the token mount stays");
    let env = env_of(app);
    assert_eq!(env["AWS_CA_BUNDLE"], BUNDLE);
    assert_eq!(env["SSL_CERT_FILE"], BUNDLE);
    assert_eq!(env["REQUESTS_CA_BUNDLE"], BUNDLE);
    assert_eq!(env["CURL_CA_BUNDLE"], BUNDLE);
    assert_eq!(env["NODE_EXTRA_CA_CERTS"], CA_CRT);
    assert_eq!(
        (env["AWS_REGION"].as_str(), env["QUEUE"].as_str()),
        ("eu-west-1", "orders"),
        "their variables stay"
    );
    assert_eq!(app.env.as_ref().unwrap()[0].name, "AWS_REGION", "ours are appended");

    assert_eq!(spec.dns_policy.as_deref(), Some("None"));
    let dns = spec.dns_config.as_ref().expect("a dnsConfig");
    assert_eq!(dns.nameservers.as_deref(), Some(&["10.96.0.53".to_owned()][..]));
    assert_eq!(
        dns.searches.as_deref().unwrap(),
        ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
    );
    assert_eq!(
        dns.options.as_deref().unwrap(),
        [PodDNSConfigOption { name: Some("ndots".into()), value: Some("5".into()) }]
    );

    let annotations = patched.metadata.annotations.as_ref().expect("annotations were created");
    assert_eq!(
        annotations.get(INJECTED_ANNOTATION).map(String::as_str),
        Some(env!("CARGO_PKG_VERSION"))
    );

    let mut untouched = patched.clone();
    untouched.metadata.annotations = None;
    let untouched_spec = untouched.spec.as_mut().unwrap();
    untouched_spec.volumes.as_mut().unwrap().pop();
    untouched_spec.containers[0].volume_mounts.as_mut().unwrap().pop();
    untouched_spec.containers[0].env.as_mut().unwrap().truncate(2);
    untouched_spec.dns_policy = Some("ClusterFirst".into());
    untouched_spec.dns_config = None;
    assert_eq!(untouched, pod, "nothing else changed");

    assert_unchanged_on_second_admission(&patched, &config());
}

#[test]
fn the_otterize_label_opts_in_too_and_other_values_do_not() {
    let (patched, _) = admit(
        &replicaset_pod(&[("network-mapper.otterize.com/aws-visibility", "true")]),
        &config(),
    );
    assert_has_ca(&spec(&patched).containers[0]);

    for pod in [
        replicaset_pod(&[]),
        replicaset_pod(&[("intentmap.dev/aws-visibility", "false")]),
        replicaset_pod(&[("network-mapper.otterize.com/aws-visibility", "yes")]),
    ] {
        let response = mutate(&pod_review(&pod), &config()).expect("an answer");
        assert!(
            patch_of(&response).is_none(),
            "an unlabelled pod is allowed without a patch: {response}"
        );
        assert!(response["response"].get("patchType").is_none(), "{response}");
    }
}

#[test]
fn a_pod_already_patched_or_carrying_the_volume_is_left_alone() {
    let (patched, _) = admit(&labelled_pod(), &config());
    assert_unchanged_on_second_admission(&patched, &config());

    let mut annotated = labelled_pod();
    annotated.metadata.annotations = Some(labels(&[(INJECTED_ANNOTATION, "0.0.1")]));
    assert!(admit(&annotated, &config()).1.is_none(), "the annotation alone marks a patched pod");

    let mut with_volume = labelled_pod();
    let volume = Volume {
        name: "intentmap-aws-ca".into(),
        config_map: Some(Default::default()),
        ..Volume::default()
    };
    with_volume.spec.as_mut().unwrap().volumes.as_mut().unwrap().push(volume);
    assert!(admit(&with_volume, &config()).1.is_none(), "the volume alone marks a patched pod");
}

#[test]
fn containers_without_env_or_mounts_get_whole_arrays_and_existing_variables_are_kept() {
    let mut pod = labelled_pod();
    let spec = pod.spec.as_mut().unwrap();
    spec.volumes = None;
    spec.containers[0].env = Some(vec![
        env("AWS_CA_BUNDLE", "/custom/ca.pem"),
        env("NODE_EXTRA_CA_CERTS", "/custom/node.pem"),
    ]);
    spec.containers.push(Container {
        name: "sidecar".into(),
        image: Some("busybox:1.36".into()),
        ..Container::default()
    });
    let (patched, _) = admit(&pod, &config());
    let spec = self::spec(&patched);

    assert_eq!(spec.volumes.as_ref().map(Vec::len), Some(1), "the volumes array was created");
    let app = env_of(&spec.containers[0]);
    assert_eq!(app["AWS_CA_BUNDLE"], "/custom/ca.pem", "their AWS_CA_BUNDLE wins");
    assert_eq!(app["NODE_EXTRA_CA_CERTS"], "/custom/node.pem");
    assert_eq!(app["SSL_CERT_FILE"], BUNDLE);
    assert_eq!(spec.containers[0].env.as_ref().unwrap().len(), 5, "no duplicates");

    let sidecar = &spec.containers[1];
    assert_has_ca(sidecar);
    assert_eq!(sidecar.env.as_ref().unwrap().len(), 5);
    assert_eq!(sidecar.volume_mounts.as_ref().unwrap().len(), 1);
    assert_unchanged_on_second_admission(&patched, &config());
}

#[test]
fn init_containers_get_the_ca_too() {
    let mut pod = labelled_pod();
    let init = Container {
        name: "migrate".into(),
        image: Some("registry.example/shop/migrate:1".into()),
        env: Some(vec![]),
        ..Container::default()
    };
    let sidecar = Container {
        name: "log-shipper".into(),
        restart_policy: Some("Always".into()),
        ..Container::default()
    };
    pod.spec.as_mut().unwrap().init_containers = Some(vec![init, sidecar]);
    let (patched, _) = admit(&pod, &config());
    let init_containers = spec(&patched).init_containers.as_ref().unwrap();
    assert_has_ca(&init_containers[0]);
    assert_has_ca(&init_containers[1]);
    assert_has_ca(&spec(&patched).containers[0]);
    assert_unchanged_on_second_admission(&patched, &config());
}

#[test]
fn host_network_pods_and_pods_already_using_our_server_keep_their_dns() {
    let mut pod = labelled_pod();
    pod.spec.as_mut().unwrap().host_network = Some(true);
    pod.spec.as_mut().unwrap().dns_policy = Some("ClusterFirstWithHostNet".into());
    let (patched, _) = admit(&pod, &config());
    assert_eq!(spec(&patched).dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(spec(&patched).dns_config, None);
    assert_has_ca(&spec(&patched).containers[0]);

    let mut pod = labelled_pod();
    let own = PodDNSConfig {
        nameservers: Some(vec!["10.96.0.53".into()]),
        searches: Some(vec!["corp.example".into()]),
        options: None,
    };
    pod.spec.as_mut().unwrap().dns_policy = Some("None".into());
    pod.spec.as_mut().unwrap().dns_config = Some(own.clone());
    let (patched, _) = admit(&pod, &config());
    assert_eq!(
        spec(&patched).dns_config.as_ref(),
        Some(&own),
        "a pod that already lists our server is left as is"
    );
    assert!(patched.metadata.annotations.is_some());
}

#[test]
fn an_existing_dns_config_is_merged() {
    let mut pod = labelled_pod();
    pod.spec.as_mut().unwrap().dns_config = Some(PodDNSConfig {
        nameservers: Some(vec!["192.0.2.10".into()]),
        searches: Some(vec!["corp.example".into()]),
        options: Some(vec![PodDNSConfigOption {
            name: Some("single-request-reopen".into()),
            value: None,
        }]),
    });
    let (patched, _) = admit(&pod, &config());
    let spec = spec(&patched);
    assert_eq!(spec.dns_policy.as_deref(), Some("None"));
    let dns = spec.dns_config.as_ref().unwrap();
    assert_eq!(dns.nameservers.as_deref().unwrap(), ["10.96.0.53", "192.0.2.10"]);
    assert_eq!(
        dns.searches.as_deref().unwrap(),
        ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
    );
    let options: Vec<&str> =
        dns.options.iter().flatten().filter_map(|o| o.name.as_deref()).collect();
    assert_eq!(options, ["ndots", "single-request-reopen"]);
    assert_unchanged_on_second_admission(&patched, &config());
}

#[test]
fn existing_annotations_get_ours_added_with_an_escaped_pointer() {
    let mut pod = labelled_pod();
    pod.metadata.annotations =
        Some(labels(&[("kubectl.kubernetes.io/restartedAt", "2024-05-01T10:00:00Z")]));
    let (patched, patch) = admit(&pod, &config());
    let annotations = patched.metadata.annotations.unwrap();
    assert_eq!(annotations.len(), 2);
    assert_eq!(annotations["kubectl.kubernetes.io/restartedAt"], "2024-05-01T10:00:00Z");
    assert!(annotations.contains_key(INJECTED_ANNOTATION));
    let paths = serde_json::to_string(&patch.unwrap()).unwrap();
    assert!(
        paths.contains("/metadata/annotations/intentmap.dev~1aws-visibility-injected"),
        "{paths}"
    );
}

#[test]
fn the_cluster_domain_and_configmap_name_are_configurable() {
    let config = MutationConfig {
        cluster_domain: "k8s.internal".into(),
        ca_configmap_name: "aws-ca".into(),
        ..config()
    };
    let (patched, _) = admit(&labelled_pod(), &config);
    let spec = spec(&patched);
    assert_eq!(
        spec.dns_config.as_ref().unwrap().searches.as_deref().unwrap(),
        ["shop.svc.k8s.internal", "svc.k8s.internal", "k8s.internal"]
    );
    let volume = spec.volumes.iter().flatten().find(|v| v.name == "intentmap-aws-ca").unwrap();
    assert_eq!(volume.config_map.as_ref().unwrap().name, "aws-ca");
}

#[test]
fn other_kinds_and_operations_are_allowed_unchanged() {
    let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "shop"}});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "shop", "labels": {"intentmap.dev/aws-visibility": "true"}}});
    let pod = serde_json::to_value(labelled_pod()).unwrap();
    for review in [
        review_of(configmap, ("", "v1", "ConfigMap"), "configmaps", "CREATE"),
        review_of(deployment, ("apps", "v1", "Deployment"), "deployments", "CREATE"),
        review_of(pod.clone(), ("", "v1", "Pod"), "pods", "UPDATE"),
        review_of(json!(null), ("", "v1", "Pod"), "pods", "DELETE"),
    ] {
        let response = mutate(&review, &config()).expect("an answer");
        assert!(patch_of(&response).is_none(), "{response}");
    }
    let mut subresource = review_of(pod, ("", "v1", "Pod"), "pods", "CREATE");
    subresource["request"]["subResource"] = "binding".into();
    assert!(patch_of(&mutate(&subresource, &config()).unwrap()).is_none());
}

#[test]
fn malformed_reviews_are_errors_with_a_reason() {
    let good = pod_review(&labelled_pod());
    let mut cases = Vec::new();
    cases.push(("not a JSON object", json!([1, 2])));
    let mut v = good.clone();
    v["apiVersion"] = "admission.k8s.io/v2".into();
    cases.push(("apiVersion", v));
    let mut v = good.clone();
    v["request"].as_object_mut().unwrap().remove("uid");
    cases.push(("request.uid", v));
    let mut v = good.clone();
    v.as_object_mut().unwrap().remove("request");
    cases.push(("no request", v));
    let mut v = good.clone();
    v["request"]["object"]["spec"]["containers"] = "nope".into();
    cases.push(("not a Pod", v));
    for (expected, review) in cases {
        match mutate(&review, &config()) {
            Err(WebhookError::MalformedReview(message)) => {
                assert!(message.contains(expected), "{expected:?} not in {message:?}")
            }
            other => panic!("expected a malformed review ({expected}), got {other:?}"),
        }
    }
}

// === Over HTTPS, against the stand-in API server ===

struct Running {
    server: FakeApiServer,
    ca: Arc<CertificateAuthority>,
    webhook: Webhook,
    roots: tempfile_path::TempFile,
}

/// A tiny temp file holder (no tempfile crate in the workspace).
mod tempfile_path {
    pub struct TempFile(pub std::path::PathBuf);
    impl TempFile {
        pub fn new(contents: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("aws-proxy-webhook-test-{}-{n}.pem", std::process::id()));
            std::fs::write(&path, contents).expect("write a temp file");
            Self(path)
        }
    }
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

const SYSTEM_ROOTS: &str =
    "# system roots\n-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n";

fn args(roots: &std::path::Path, patch_configuration: Option<&str>) -> WebhookArgs {
    WebhookArgs {
        webhook_listen: "127.0.0.1:0".parse().unwrap(),
        webhook_service: "aws-proxy".into(),
        webhook_namespace: "intentmap".into(),
        opted_in_namespaces: vec!["shop".into()],
        dns_server_ip: DNS_IP,
        cluster_dns_ip: Some(CLUSTER_DNS_IP),
        no_cluster_dns_fallback: false,
        cluster_domain: "cluster.local".into(),
        ca_configmap_name: "intentmap-aws-ca".into(),
        system_roots: roots.to_owned(),
        patch_webhook_configuration: patch_configuration.map(str::to_owned),
        client_ca_file: None,
    }
}

async fn start(server: FakeApiServer, patch_configuration: Option<&str>) -> Running {
    let ca = Arc::new(
        CertificateAuthority::generate_for(&[
            SERVICE_HOST.into(),
            format!("{SERVICE_HOST}.cluster.local"),
        ])
        .expect("a CA"),
    );
    let roots = tempfile_path::TempFile::new(SYSTEM_ROOTS);
    let webhook =
        Webhook::start(&args(&roots.0, patch_configuration), ca.clone(), Some(server.client()))
            .await
            .expect("the webhook starts");
    Running { server, ca, webhook, roots }
}

async fn fake_api() -> FakeApiServer {
    let server = FakeApiServer::start().await.expect("the stand-in API server starts");
    server.register::<ConfigMap>();
    server.register::<MutatingWebhookConfiguration>();
    server
}

/// An HTTPS client that trusts only the CA and resolves the Service's names to the webhook.
fn https_client(ca: &CertificateAuthority, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(ca.ca_pem().as_bytes()).expect("the CA PEM"),
        )
        .resolve(SERVICE_HOST, addr)
        .resolve(&format!("{SERVICE_HOST}.cluster.local"), addr)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTPS client")
}

async fn post_review(client: &reqwest::Client, addr: SocketAddr, review: &Value) -> Value {
    let response = client
        .post(format!("https://{SERVICE_HOST}:{}/mutate", addr.port()))
        .json(review)
        .send()
        .await
        .expect("the webhook answers over HTTPS");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON AdmissionReview")
}

fn configmap_data(server: &FakeApiServer, namespace: &str) -> Option<BTreeMap<String, String>> {
    server.get::<ConfigMap>(namespace, "intentmap-aws-ca").map(|cm| cm.data.unwrap_or_default())
}

#[tokio::test]
async fn over_https_a_labelled_pod_is_patched_and_the_ca_configmap_written() {
    let Running { server, ca, webhook, roots: _roots } = start(fake_api().await, None).await;
    let addr = webhook.local_addr();
    let client = https_client(&ca, addr);

    let health = client
        .get(format!("https://{SERVICE_HOST}:{}/healthz", addr.port()))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);

    let response = post_review(&client, addr, &pod_review(&labelled_pod())).await;
    let patch = patch_of(&response).expect("a labelled pod is patched");
    assert!(!patch.0.is_empty());
    let data = configmap_data(&server, "shop")
        .expect("the CA ConfigMap was created in the pod's namespace");
    assert_eq!(data["ca.crt"], ca.ca_pem());
    assert_eq!(
        data["bundle.crt"],
        format!("{}{SYSTEM_ROOTS}", ca.ca_pem()),
        "the CA, then the system roots"
    );
    assert!(data["bundle.crt"].starts_with("-----BEGIN CERTIFICATE-----"));

    // The namespace is cached: the next pod costs no API request.
    let requests = server.request_count("/api/v1/namespaces/shop/configmaps");
    let response = post_review(&client, addr, &pod_review(&labelled_pod())).await;
    assert!(patch_of(&response).is_some());
    assert_eq!(
        server.request_count("/api/v1/namespaces/shop/configmaps"),
        requests,
        "no API request on the hot path"
    );

    // Unlabelled pods neither get a patch nor cost an API request.
    let response = post_review(&client, addr, &pod_review(&replicaset_pod(&[]))).await;
    assert!(patch_of(&response).is_none());

    // The longer Service name is in the certificate too.
    let health = client
        .get(format!("https://{SERVICE_HOST}.cluster.local:{}/healthz", addr.port()))
        .send()
        .await
        .expect("healthz by the FQDN");
    assert_eq!(health.text().await.unwrap(), "ok");

    let malformed = client
        .post(format!("https://{SERVICE_HOST}:{}/mutate", addr.port()))
        .header("content-type", "application/json")
        .body("{\"apiVersion\": \"admission.k8s.io/v1\", \"kind\": ")
        .send()
        .await
        .expect("an answer to a malformed body");
    assert_eq!(malformed.status(), 400);
    let message = malformed.text().await.unwrap();
    assert!(
        message.contains("malformed AdmissionReview") && message.contains("not JSON"),
        "{message}"
    );
    let no_uid = client
        .post(format!("https://{SERVICE_HOST}:{}/mutate", addr.port()))
        .json(
            &json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(no_uid.status(), 400);
    assert!(no_uid.text().await.unwrap().contains("request.uid"));

    webhook.shutdown().await;
    let refused =
        client.get(format!("https://{SERVICE_HOST}:{}/healthz", addr.port())).send().await;
    assert!(refused.is_err(), "the webhook stopped: {refused:?}");
}

#[tokio::test]
async fn a_stale_ca_configmap_is_replaced() {
    let server = fake_api().await;
    let stale = ConfigMap {
        metadata: ObjectMeta {
            name: Some("intentmap-aws-ca".into()),
            namespace: Some("shop".into()),
            labels: Some(labels(&[("keep", "me")])),
            ..Default::default()
        },
        data: Some(labels(&[("ca.crt", "an old CA")])),
        ..Default::default()
    };
    server.apply(&stale);
    let Running { server, ca, webhook, roots: _roots } = start(server, None).await;
    let response = post_review(
        &https_client(&ca, webhook.local_addr()),
        webhook.local_addr(),
        &pod_review(&labelled_pod()),
    )
    .await;
    assert!(patch_of(&response).is_some());
    let replaced = server.get::<ConfigMap>("shop", "intentmap-aws-ca").expect("the ConfigMap");
    assert_eq!(replaced.data.as_ref().unwrap()["ca.crt"], ca.ca_pem());
    assert_eq!(replaced.metadata.labels.unwrap()["keep"], "me", "the rest of the object stays");
    webhook.shutdown().await;
}

#[tokio::test]
async fn when_the_configmap_cannot_be_written_the_pod_is_admitted_unpatched() {
    // A stand-in server that does not serve ConfigMaps: every write fails with a 404.
    let server = FakeApiServer::start().await.expect("the stand-in API server starts");
    let Running { server: _server, ca, webhook, roots: _roots } = start(server, None).await;
    let response = post_review(
        &https_client(&ca, webhook.local_addr()),
        webhook.local_addr(),
        &pod_review(&labelled_pod()),
    )
    .await;
    assert!(
        patch_of(&response).is_none(),
        "no patch, or the pod would wait forever for a missing ConfigMap: {response}"
    );
    webhook.shutdown().await;
}

fn webhook_configuration(names: &[&str]) -> MutatingWebhookConfiguration {
    let webhooks = names
        .iter()
        .map(|name| MutatingWebhook {
            name: name.to_string(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            failure_policy: Some("Ignore".into()),
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: "aws-proxy".into(),
                    namespace: "intentmap".into(),
                    path: Some("/mutate".into()),
                    port: Some(443),
                }),
                ..Default::default()
            },
            ..Default::default()
        })
        .collect();
    MutatingWebhookConfiguration {
        metadata: ObjectMeta { name: Some("intentmap-aws-proxy".into()), ..Default::default() },
        webhooks: Some(webhooks),
    }
}

async fn ca_bundles_become(server: &FakeApiServer, ca_pem: &str) -> Vec<Option<Vec<u8>>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let bundles: Vec<Option<Vec<u8>>> = server
            .get::<MutatingWebhookConfiguration>("", "intentmap-aws-proxy")
            .and_then(|c| c.webhooks)
            .unwrap_or_default()
            .into_iter()
            .map(|w| w.client_config.ca_bundle.map(|b| b.0))
            .collect();
        if !bundles.is_empty() && bundles.iter().all(|b| b.as_deref() == Some(ca_pem.as_bytes())) {
            return bundles;
        }
        assert!(tokio::time::Instant::now() < deadline, "the caBundle was not set: {bundles:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_webhook_configuration_gets_the_ca_bundle() {
    let server = fake_api().await;
    server.apply(&webhook_configuration(&[
        "pods.aws-proxy.intentmap.dev",
        "pods-otterize.aws-proxy.intentmap.dev",
    ]));
    let Running { server, ca, webhook, roots: _roots } =
        start(server, Some("intentmap-aws-proxy")).await;
    assert_eq!(ca_bundles_become(&server, ca.ca_pem()).await.len(), 2);
    let stored = server.get::<MutatingWebhookConfiguration>("", "intentmap-aws-proxy").unwrap();
    let service = stored.webhooks.unwrap()[0]
        .client_config
        .service
        .clone()
        .expect("the rest of clientConfig stays");
    assert_eq!(service.path.as_deref(), Some("/mutate"));
    webhook.shutdown().await;
}

#[tokio::test]
async fn the_ca_bundle_is_set_once_the_configuration_appears() {
    let Running { server, ca, webhook, roots: _roots } =
        start(fake_api().await, Some("intentmap-aws-proxy")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(server.get::<MutatingWebhookConfiguration>("", "intentmap-aws-proxy").is_none());
    server.apply(&webhook_configuration(&["pods.aws-proxy.intentmap.dev"]));
    assert_eq!(ca_bundles_become(&server, ca.ca_pem()).await.len(), 1);
    webhook.shutdown().await;
}

#[tokio::test]
async fn patching_the_configuration_needs_api_access() {
    let roots = tempfile_path::TempFile::new(SYSTEM_ROOTS);
    let ca = Arc::new(CertificateAuthority::generate().unwrap());
    let err = Webhook::start(&args(&roots.0, Some("x")), ca, None)
        .await
        .err()
        .expect("refused without a kube client");
    assert!(err.to_string().contains("--patch-webhook-configuration"), "{err:#}");
}

#[tokio::test]
async fn http2_is_negotiated_by_alpn() {
    let Running { server: _server, ca, webhook, roots: _roots } =
        start(fake_api().await, None).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).expect("the CA PEM"))
        .expect("a usable CA");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(webhook.local_addr()).await.expect("connect");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from(SERVICE_HOST).unwrap(), tcp)
        .await
        .expect("a TLS handshake");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "the server picks h2");

    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("an HTTP/2 handshake");
    tokio::spawn(connection);
    let body = serde_json::to_vec(&pod_review(&replicaset_pod(&[]))).unwrap();
    let request = http::Request::post(format!("https://{SERVICE_HOST}/mutate"))
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.expect("an HTTP/2 response");
    assert_eq!(
        (response.status(), response.version()),
        (http::StatusCode::OK, http::Version::HTTP_2)
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["response"]["allowed"], true);
    webhook.shutdown().await;
}
