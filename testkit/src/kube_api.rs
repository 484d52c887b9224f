//! A **stand-in** Kubernetes API server for tests and the local demo. It is not a Kubernetes
//! API server and must never be mistaken for one: no API server can be installed on these
//! machines, so the real `kube::Client` (and `kube::runtime` watchers and reflectors) talk to
//! this one, in process, over real HTTP on 127.0.0.1.
//!
//! What it serves, following the Kubernetes API conventions that `kube-runtime` relies on:
//!
//! - LIST, WATCH and GET of the built-in resources the mapper reads (pods, services, nodes,
//!   namespaces, replicasets, deployments, statefulsets, daemonsets, jobs, cronjobs,
//!   endpointslices, ingresses) and of any other type once it is [`FakeApiServer::register`]ed
//!   or [`FakeApiServer::apply`]d, namespaced (`/api/v1/namespaces/{ns}/pods`, all namespaces
//!   at `/api/v1/pods`) or cluster-scoped (`/api/v1/nodes`).
//! - One global, monotonically increasing `resourceVersion`. Watches replay the change history
//!   after the requested version, then follow live changes; a version older than the last
//!   [`FakeApiServer::compact`] gets a single `ERROR` event carrying a 410 `Expired` `Status`.
//!   `BOOKMARK`s follow the replay and every [`BOOKMARK_INTERVAL`] of quiet when
//!   `allowWatchBookmarks` is set, and the stream ends after `timeoutSeconds`.
//!   `sendInitialEvents=true` (streaming lists) is honoured, ending with the
//!   `k8s.io/initial-events-end` bookmark.
//! - `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and
//!   `fieldSelector` (`path=v`, `path!=v` over any dotted field path such as `metadata.name` or
//!   `spec.nodeName`). A watch with a label selector sees an object that stops (starts)
//!   matching as `DELETED` (`ADDED`), as a real server does.
//! - Metadata-only requests: `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
//!   (lists) and `as=PartialObjectMetadata` (watches and single GETs) are answered with
//!   `meta.k8s.io/v1` `PartialObjectMetadata(List)` objects that carry only `metadata`.
//! - Writes of every served type, namespaced (`POST /api/v1/namespaces/{ns}/configmaps`) or
//!   cluster-scoped (`/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations`):
//!   - `POST` creates (201) with a new `uid`, `creationTimestamp` and `resourceVersion` (and a
//!     name from `generateName`); an existing name is a 409 `AlreadyExists`.
//!   - `PUT` replaces (200), keeping `uid` and `creationTimestamp`; a `resourceVersion` in the
//!     body that is not the stored one is a 409 `Conflict`, as is a different `uid`.
//!   - `PATCH` with `application/merge-patch+json` (RFC 7386), `application/json-patch+json`
//!     (RFC 6902; a malformed patch is a 400, an operation that cannot apply a 422) or
//!     `application/strategic-merge-patch+json`, which is applied **as a JSON merge patch**:
//!     lists are replaced rather than merged by key, and a patch carrying a strategic directive
//!     (`$patch`, `$retainKeys`, ...) is refused with a 400 rather than mis-applied. Server-side
//!     apply (`application/apply-patch+yaml`) is a 415. The patched object is stored as a `PUT`
//!     of it would be.
//!   - `DELETE` removes at once and answers with the object; `DeleteOptions.preconditions`
//!     (`uid`, `resourceVersion`) are checked (409).
//!   - A missing object is a 404 `NotFound`; a body whose `apiVersion`, `kind`, namespace or
//!     name contradicts the URL is a 400.
//!
//!   Every write takes the next `resourceVersion` and is seen by watches exactly like
//!   [`FakeApiServer::apply`] and [`FakeApiServer::delete`]; [`FakeApiServer::get`] reads what
//!   was written.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`, answered from
//!   [`FakeApiServer::set_token_review`] and [`FakeApiServer::set_token_identity`] (audiences
//!   and `user.extra`, as projected tokens have), and
//!   `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`, answered from
//!   [`FakeApiServer::grant`] (see `kube_api/reviews.rs`).
//! - The pod log subresource, `GET /api/v1/namespaces/{ns}/pods/{name}/log`, serving the lines
//!   tests add with [`FakeApiServer::append_log`]: `timestamps=true` prefixes each line with
//!   its time as the kubelet does (RFC 3339 with up to nine fractional digits, trailing zeros
//!   dropped, `Z`); `sinceTime` (RFC 3339) and `sinceSeconds` keep the lines stamped at or after
//!   that time, `tailLines` the last ones; `follow=true` keeps the stream open and sends lines
//!   as they are added, until the pod is deleted, the server stops, or the test cuts it with
//!   [`FakeApiServer::cut_log_streams`] or, in the middle of a line, with
//!   [`FakeApiServer::append_log_and_cut`]. A pod has one log whatever container is asked for,
//!   but the `container` must be one of the pod's, and must be named when it has several (400
//!   otherwise, as on a real server); `previous=true` is a 400 (no container ever restarted)
//!   and `limitBytes` is refused with a 400. A pod that does not exist is a 404.
//! - Everything else is a 404 (or a 405 for a method a path does not serve, such as `POST` to
//!   the all-namespaces `/api/v1/configmaps`) with a Kubernetes `Status` body.
//!
//! Deliberate limitations: only types that are built in, [`FakeApiServer::register`]ed or
//! [`FakeApiServer::apply`]d are served; written objects are not validated against their schema
//! and no defaults are filled in (a write a real server would refuse as `Invalid` may be stored);
//! namespaces need not exist; there are no admission webhooks, finalizers, graceful deletion,
//! `generation`, `managedFields`, `dryRun` (refused with a 400), `deletecollection`,
//! subresources other than `pods/log` (`/status`, `/scale`, `/exec`, ...) or discovery; lists ignore `limit`/`continue` and
//! always return the latest state in one page; there is no authentication or authorisation of
//! callers; the history keeps the last [`MAX_HISTORY`] changes and older ones are compacted away.
//!
//! The code is split along the server's own parts: [`FakeApiServer`] and what tests call on it
//! (`server.rs`), the object store and its change history (`store.rs`), request routing
//! (`routing.rs`), GET/LIST/WATCH (`reads.rs`), POST/PUT/DELETE (`writes.rs`), PATCH
//! (`patch.rs`), label and field selectors (`selection.rs`), pod logs (`logs.rs`), Kubernetes
//! `Status` answers (`responses.rs`) and token and access reviews (`reviews.rs`).

use std::time::Duration;

mod logs;
mod patch;
mod reads;
mod responses;
mod reviews;
mod routing;
mod selection;
mod server;
mod store;
mod writes;

pub use reviews::{TokenIdentity, API_AUDIENCE};
pub use server::FakeApiServer;

/// How long a watch with `allowWatchBookmarks` may be quiet before it gets a `BOOKMARK`.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);
/// How many changes the server remembers for watches to replay; older ones are compacted away.
pub const MAX_HISTORY: usize = 10_000;

/// The `apiVersion` of metadata-only answers (`PartialObjectMetadata(List)`).
const META_API_VERSION: &str = "meta.k8s.io/v1";
