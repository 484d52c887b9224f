//! How the CLI speaks HTTP to the mapper: at `--mapper-url`, or, with only a kubeconfig, over a
//! port-forward to the mapper's pod through the API server (the pod's `portforward`
//! subresource, as `kubectl port-forward` uses; nothing listens on this machine, so no other
//! local user can use the forward, which the mapper trusts as it arrives on its loopback).

use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::discover::MapperPod;

/// How long one request to the mapper may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// The most of an answer read: the mapper keeps at most 200,000 edges, well under this.
pub const MAX_ANSWER_BYTES: usize = 512 * 1024 * 1024;

/// The mapper's answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Where the mapper is.
pub enum Endpoint {
    /// `--mapper-url` (e.g. after `kubectl port-forward`, or from a pod).
    Url { base: String, http: reqwest::Client },
    /// Found by [`crate::discover::find_mapper`]; each request port-forwards to the pod.
    Forwarded { pods: Box<Api<Pod>>, target: MapperPod },
}

impl Endpoint {
    pub fn url(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(TIMEOUT).build()?;
        Ok(Self::Url { base: base.trim_end_matches('/').to_owned(), http })
    }

    pub fn forwarded(client: kube::Client, target: MapperPod) -> Self {
        Self::Forwarded { pods: Box::new(Api::namespaced(client, &target.namespace)), target }
    }

    /// Where the mapper is, for messages and the picture's caption.
    pub fn describe(&self) -> String {
        match self {
            Self::Url { base, .. } => base.clone(),
            Self::Forwarded { target, .. } => format!("{}/{}", target.namespace, target.pod),
        }
    }

    /// Sends `method path_and_query` (a path starting with `/`) with an optional bearer token.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        token: Option<&str>,
    ) -> anyhow::Result<Reply> {
        match self {
            Self::Url { base, http } => {
                let mut request = http.request(method, format!("{base}{path_and_query}"));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let reply = request.send().await.map_err(|e| {
                    anyhow::anyhow!(
                        "cannot reach the mapper at {base}: {e}\nIs it running? Leave out --mapper-url (and INTENTMAP_MAPPER_URL) to find it through your kubeconfig, or run kubectl port-forward -n intentmap svc/intentmap-mapper 9090:9090 first"
                    )
                })?;
                let status = reply.status();
                let body = reply.bytes().await.with_context(|| {
                    format!("reading the mapper's answer from {base} was cut off; try again")
                })?;
                if body.len() > MAX_ANSWER_BYTES {
                    anyhow::bail!("the mapper's answer is larger than {MAX_ANSWER_BYTES} bytes; narrow it with -n NAMESPACES");
                }
                Ok(Reply { status, body })
            }
            Self::Forwarded { pods, target } => {
                tokio::time::timeout(TIMEOUT, forwarded(pods, target, method, path_and_query, token))
                    .await
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "the mapper ({target}) did not answer within {} s; is it overloaded? Try again, or check kubectl -n {} logs {}",
                            TIMEOUT.as_secs(),
                            target.namespace,
                            target.pod
                        )
                    })?
            }
        }
    }
}

async fn forwarded(
    pods: &Api<Pod>,
    target: &MapperPod,
    method: Method,
    path_and_query: &str,
    token: Option<&str>,
) -> anyhow::Result<Reply> {
    let mut forwarder = pods.portforward(&target.pod, &[target.port]).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot port-forward to the mapper ({target}): {e}\nYour kubeconfig's user needs `create` on pods/portforward in namespace {} (kubectl auth can-i create pods/portforward -n {}), or pass --mapper-url.",
            target.namespace,
            target.namespace
        )
    })?;
    let stream = forwarder.take_stream(target.port).context(
        "the port-forward has no stream for the mapper's port (a bug: please report it)",
    )?;
    let forward_error = forwarder.take_error(target.port);
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        let mut request =
            http::Request::builder().method(method).uri(path_and_query).header(HOST, "localhost");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = sender.send_request(request.body(Full::new(Bytes::new()))?).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
            .to_bytes();
        drop(sender);
        connection.abort();
        anyhow::Ok(Reply { status, body })
    };
    let result = exchange.await;
    let result = match result {
        Ok(reply) => Ok(reply),
        Err(e) => {
            // The API server or kubelet says why the forward failed on its error channel.
            let why = match forward_error {
                Some(error) => tokio::time::timeout(Duration::from_secs(1), error)
                    .await
                    .ok()
                    .flatten()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default(),
                None => String::new(),
            };
            Err(anyhow::anyhow!(
                "talking to the mapper ({target}) failed{why}: {e:#}\nIs the mapper listening? kubectl -n {} logs {}",
                target.namespace,
                target.pod
            ))
        }
    };
    forwarder.abort();
    result
}
