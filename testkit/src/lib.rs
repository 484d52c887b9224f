//! What tests and the local demo share.
//!
//! - [`admission`]: the JSON patch in an admission webhook's answer.
//! - [`pg`]: a throwaway PostgreSQL cluster (or the one `DATABASE_URL` names), one fresh
//!   database per caller.
//! - [`crd`]: a strict validator for Kubernetes `openAPIV3Schema`s, used to check the
//!   ClientIntents we emit against the published CRD in `../shared/reference/`.
//! - [`kube_api`]: a stand-in Kubernetes API server (list, watch with resourceVersions,
//!   bookmarks and 410 Gone, metadata-only requests, TokenReview) that the real `kube::Client`
//!   talks to over HTTP on 127.0.0.1. For tests and the local demo only; not a real API server.
//! - [`cluster`]: a real single-node Kubernetes cluster (etcd, the control plane, containerd, the
//!   kubelet, kube-proxy, CoreDNS) built from registries by `scripts/k8s/build.sh`, as root.
//! - [`need`]: whether a test can run here (root, installed programs, `../shared`); a missing
//!   prerequisite fails the test naming what provides it.
//! - [`netns`]: network namespaces standing in for pods (a pair joined by a veth), and threads
//!   that run inside one; as root.
//! - [`process`]: child processes killed on drop, readiness polling, free ports and temporary
//!   directories.

pub mod admission;
pub mod cluster;
pub mod crd;
pub mod envoy;
pub mod kafka;
pub mod kube_api;
pub mod need;
pub mod netns;
pub mod pg;
pub mod process;
