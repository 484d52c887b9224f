//! One request: which AWS endpoint it is for, what it does ([`crate::analyse`]), and forwarding
//! it there over verified TLS, always to port 443.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::Incoming;
use model::observation::AwsOperation;
use observation_ship::Observed;
use tracing::warn;

use super::{count, Shared};
use crate::analyse::{self, RequestParts};
use crate::is_aws_host;

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type Body = BoxBody<Bytes, BoxError>;

/// Why a request's authority (`Host`, or HTTP/2's `:authority`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// `user@host`: user information has no place in a request to AWS (400).
    #[error("Host {0} carries user information (`@`); aws-proxy refuses it")]
    UserInfo(String),
    /// A port other than 443: AWS endpoints are reached on 443 only (400).
    #[error("Host {0} names a port other than 443; aws-proxy forwards to AWS endpoints on port 443 only")]
    Port(String),
    /// Not an AWS host name (421).
    #[error("aws-proxy forwards only AWS hosts; Host {0} is not one")]
    NotAws(String),
}

/// The host name to forward `authority` to, on port 443: lower case, without a port (`:443` is
/// accepted and dropped) and without a trailing dot.
pub fn upstream_authority(authority: &str) -> Result<String, AuthorityError> {
    if authority.contains('@') {
        return Err(AuthorityError::UserInfo(authority.to_owned()));
    }
    let host = match authority.rsplit_once(':') {
        // An IPv6 literal, or more than one colon: not an AWS host name either way.
        Some((host, _)) if host.contains([':', '[', ']']) => {
            return Err(AuthorityError::NotAws(authority.to_owned()))
        }
        Some((host, "443")) => host,
        Some(_) => return Err(AuthorityError::Port(authority.to_owned())),
        None => authority,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty()
        || http::uri::Authority::try_from(host.as_str()).is_err()
        || !is_aws_host(&host)
    {
        return Err(AuthorityError::NotAws(authority.to_owned()));
    }
    Ok(host)
}

/// Forwards one request to `tls_host`'s real endpoint and records what it was.
pub(super) async fn forward(
    req: Request<Incoming>,
    client_ip: IpAddr,
    tls_host: &str,
    shared: &Shared,
) -> Response<Body> {
    count(&shared.stats.requests);
    let (mut parts, body) = req.into_parts();
    let host_header = parts.headers.get(header::HOST).map(|h| h.to_str().map(str::to_owned));
    let authority = match host_header {
        Some(Ok(host)) => host,
        Some(Err(_)) => return plain(StatusCode::BAD_REQUEST, "the Host header is not text\n"),
        None => parts.uri.authority().map(|a| a.to_string()).unwrap_or_else(|| tls_host.to_owned()),
    };
    // HTTP/2 may carry both `:authority` and `Host`: both must pass.
    let checked = [Some(authority.as_str()), parts.uri.authority().map(|a| a.as_str())];
    let mut host = String::new();
    for candidate in checked.into_iter().flatten() {
        match upstream_authority(candidate) {
            Ok(h) if candidate == authority => host = h,
            Ok(_) => {}
            Err(err) => {
                let status = match err {
                    AuthorityError::NotAws(_) => {
                        count(&shared.stats.refused_hosts);
                        StatusCode::MISDIRECTED_REQUEST
                    }
                    AuthorityError::UserInfo(_) | AuthorityError::Port(_) => {
                        count(&shared.stats.bad_authorities);
                        StatusCode::BAD_REQUEST
                    }
                };
                return plain(status, &format!("{err}\n"));
            }
        }
    }
    let path_and_query =
        parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
    let peeked = match peek_body(&parts.method, &parts.headers, body, shared.client_timeout).await {
        Ok(peeked) => peeked,
        Err(response) => return response,
    };
    let call = {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query.as_str(), None),
        };
        let view = RequestParts {
            method: &parts.method,
            host: &host,
            path,
            query,
            headers: &parts.headers,
            body: match &peeked {
                Peeked::Whole(bytes) => Some(bytes.as_ref()),
                Peeked::Stream(_) => None,
            },
        };
        analyse::analyse(&view, shared.account.as_deref())
    };
    record(&call, client_ip, shared);

    // No port in the URI: the connector dials 443 (or the --connect-to address).
    let uri = match Uri::builder()
        .scheme("https")
        .authority(host.as_str())
        .path_and_query(path_and_query.as_str())
        .build()
    {
        Ok(uri) => uri,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("cannot forward to {host}{path_and_query}: {e}\n"),
            )
        }
    };
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    if parts.version == http::Version::HTTP_2 && !parts.headers.contains_key(header::HOST) {
        if let Ok(value) = HeaderValue::from_str(&host) {
            parts.headers.insert(header::HOST, value);
        }
    }
    parts.version = http::Version::HTTP_11;
    let body = match peeked {
        Peeked::Whole(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed(),
        Peeked::Stream(incoming) => incoming.map_err(|e| Box::new(e) as BoxError).boxed(),
    };
    match shared.upstream.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
        }
        Err(e) => {
            count(&shared.stats.upstream_errors);
            // `{:#}` prints the error with its causes, "outer: inner: ...".
            let reason = format!("{:#}", anyhow::Error::new(e));
            warn!(host = %host, error = %reason, "could not reach the AWS endpoint");
            plain(StatusCode::BAD_GATEWAY, &format!("aws-proxy could not reach {host}: {reason}\n"))
        }
    }
}

enum Peeked {
    Whole(Bytes),
    Stream(Incoming),
}

/// Reads a small identifying body whole (see the module doc); anything else streams.
async fn peek_body(
    method: &Method,
    headers: &HeaderMap,
    body: Incoming,
    timeout: Duration,
) -> Result<Peeked, Response<Body>> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let small = matches!(length, Some(n) if n <= analyse::MAX_BODY_PEEK);
    if !small || !analyse::wants_body(method, headers) {
        return Ok(Peeked::Stream(body));
    }
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(Peeked::Whole(collected.to_bytes())),
        Ok(Err(e)) => {
            Err(plain(StatusCode::BAD_REQUEST, &format!("the request body broke off: {e}\n")))
        }
        Err(_) => {
            Err(plain(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time\n"))
        }
    }
}

fn record(call: &analyse::AwsCall, client_ip: IpAddr, shared: &Shared) {
    let Some(service) = call.service.clone() else {
        count(&shared.stats.unknown_service);
        return;
    };
    shared.sink.push(Observed::Aws(AwsOperation {
        client_ip,
        service,
        action: call.action.clone().unwrap_or_default(),
        resource: call.resource.clone(),
        region: call.region.clone(),
        at: chrono::Utc::now(),
    }));
    count(&shared.stats.recorded);
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

pub(super) fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(text.to_owned())).map_err(|never| match never {}).boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

pub(super) fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Custom"));
        headers.insert("x-custom", HeaderValue::from_static("1"));
        headers.insert("x-amz-date", HeaderValue::from_static("20260101T000000Z"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-amz-date"));
    }

    #[test]
    fn authorities_are_pinned_to_443_and_carry_no_user() {
        assert_eq!(
            upstream_authority("S3.us-east-1.AmazonAWS.com").unwrap(),
            "s3.us-east-1.amazonaws.com"
        );
        assert_eq!(upstream_authority("s3.amazonaws.com:443").unwrap(), "s3.amazonaws.com");
        assert_eq!(upstream_authority("s3.amazonaws.com.").unwrap(), "s3.amazonaws.com");
        for bad in [
            "s3.amazonaws.com:8080",
            "s3.amazonaws.com:80",
            "s3.amazonaws.com:",
            "s3.amazonaws.com:0443",
            "s3.amazonaws.com:443x",
        ] {
            assert!(matches!(upstream_authority(bad), Err(AuthorityError::Port(_))), "{bad}");
        }
        for bad in [
            "evil.example@s3.amazonaws.com",
            "user:pw@s3.amazonaws.com:443",
            "s3.amazonaws.com@evil.example",
            "evil.com:443@x.amazonaws.com",
        ] {
            assert!(matches!(upstream_authority(bad), Err(AuthorityError::UserInfo(_))), "{bad}");
        }
        for bad in [
            "example.com",
            "[::1]:443",
            "",
            "amazonaws.com.evil.org",
            "s3.amazonaws.com/x",
            "a b.amazonaws.com",
        ] {
            assert!(matches!(upstream_authority(bad), Err(AuthorityError::NotAws(_))), "{bad}");
        }
    }
}
