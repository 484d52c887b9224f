//! Requests built the way the SDKs send them, for the tests of every section.

pub(super) use super::{analyse, wants_body, AwsCall, RequestParts, MAX_BODY_PEEK, MAX_VALUE_LEN};
pub(super) use http::{HeaderMap, HeaderName, HeaderValue, Method};

pub(super) const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
pub(super) const SIGNATURE: &str =
    "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";
pub(super) const SESSION_TOKEN: &str =
    "IQoJb3JpZ2luX2VjEHYaCXVzLWVhc3QtMSJHMEUCIQDexampleSessionTokenValue";
pub(super) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
pub(super) const ACCOUNT: &str = "123456789012";
pub(super) const USER_AGENT: &str = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.1.0 md/arch#x86_64 lang/python#3.12.3 md/pyimpl#CPython \
                          cfg/retry-mode#legacy Botocore/1.35.0";

/// A request as a proxy sees it, built the way botocore sends them.
pub(super) struct Request {
    pub(super) method: Method,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) query: Option<String>,
    pub(super) headers: HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Request {
    pub(super) fn new(method: &str, host: &str, path_and_query: &str) -> Request {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query.to_owned())),
            None => (path_and_query, None),
        };
        let request = Request {
            method: Method::from_bytes(method.as_bytes()).expect("method"),
            host: host.to_owned(),
            path: path.to_owned(),
            query,
            headers: HeaderMap::new(),
            body: Vec::new(),
        };
        request
            .header("host", host)
            .header("user-agent", USER_AGENT)
            .header("amz-sdk-invocation-id", "4f9b2c1e-8d3a-4e5b-9c7d-1a2b3c4d5e6f")
            .header("amz-sdk-request", "attempt=1")
    }

    /// SigV4 headers as botocore writes them (temporary credentials, so with a session token).
    pub(super) fn signed(self, service: &str, region: &str) -> Request {
        let signed_headers = if service == "s3" {
            "host;x-amz-content-sha256;x-amz-date;x-amz-security-token"
        } else {
            "host;x-amz-date;x-amz-security-token"
        };
        let authorization =
            format!("AWS4-HMAC-SHA256 Credential={AKID}/20260101/{region}/{service}/aws4_request, SignedHeaders={signed_headers}, Signature={SIGNATURE}");
        let request = self
            .header("x-amz-date", "20260101T120000Z")
            .header("x-amz-security-token", SESSION_TOKEN)
            .header("authorization", &authorization);
        if service == "s3" {
            request.header("x-amz-content-sha256", EMPTY_SHA256)
        } else {
            request
        }
    }

    pub(super) fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
        self
    }

    pub(super) fn body(mut self, content_type: &str, body: &str) -> Request {
        self.body = body.as_bytes().to_vec();
        self.header("content-type", content_type).header("content-length", &body.len().to_string())
    }

    /// The AWS JSON protocol: `X-Amz-Target` and an `application/x-amz-json-*` body.
    pub(super) fn json(self, target: &str, version: &str, body: &str) -> Request {
        self.header("x-amz-target", target).body(&format!("application/x-amz-json-{version}"), body)
    }

    /// The Query protocol: a form body.
    pub(super) fn form(self, body: &str) -> Request {
        self.body("application/x-www-form-urlencoded; charset=utf-8", body)
    }

    pub(super) fn parts(&self) -> RequestParts<'_> {
        RequestParts {
            method: &self.method,
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            headers: &self.headers,
            // As the proxy does: only what `wants_body` asks for.
            body: (!self.body.is_empty() && wants_body(&self.method, &self.headers))
                .then_some(self.body.as_slice()),
        }
    }

    pub(super) fn analyse(&self, account: Option<&str>) -> AwsCall {
        analyse(&self.parts(), account)
    }
}

pub(super) fn call(
    service: &str,
    region: &str,
    action: Option<&str>,
    resource: Option<&str>,
) -> AwsCall {
    AwsCall {
        service: Some(service.to_owned()),
        region: Some(region.to_owned()),
        action: action.map(str::to_owned),
        resource: resource.map(str::to_owned),
    }
}
