//! What an AWS API request is: service, region, IAM action and resource ARN.
//!
//! Pure: the proxy hands over the parts of a request it forwards ([`RequestParts`]) and gets an
//! [`AwsCall`] back. Nothing secret is kept: the SigV4 credential scope is read for its service and
//! region only (never the access key id, signature or session token), and a peeked body for a few
//! identifying fields (table, queue, topic, key, secret names) only.
//!
//! Where things come from, first match wins:
//! - service and region: the credential scope (`Authorization` header or the `X-Amz-Credential` of
//!   a presigned URL; `X-Amz-Region-Set` for SigV4a), then the endpoint host name;
//! - operation: S3 and Lambda by REST method and path; otherwise `X-Amz-Target`, the `Action`
//!   parameter of the query string, a Smithy RPCv2 path, the `Action` of a form body;
//! - resource: the host (S3 virtual-hosted buckets, access points, API Gateway), the path (S3
//!   path style, Lambda functions) or the body (DynamoDB, SQS, SNS, KMS, Secrets Manager, ...).
//!
//! The sections: `endpoint` (signature and endpoint), `rpc` (the RPC protocols and their
//! resources), `s3`, `lambda`, and `names` (names and encodings).

mod endpoint;
mod lambda;
mod names;
mod rpc;
mod s3;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::fmt;

use http::{HeaderMap, Method};

use endpoint::{iam_prefix, partition, Arns, Endpoint, Scope, Target};
use names::{header_str, is_account_id};
use rpc::{body_kind, execute_api_resource, rpc, BodyKind};

/// The most body the proxy holds to look at (decided by `Content-Length`).
pub const MAX_BODY_PEEK: usize = 64 * 1024;
/// The longest name (table, key, queue, ...) put into an ARN.
const MAX_VALUE_LEN: usize = 1024;
/// The longest ARN reported.
const MAX_ARN_LEN: usize = 2048;

/// The parts of a request that tell what it is. Its `Debug` shows no header values, query or body.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    /// The `Host` header or `:authority`, may carry `:port`.
    pub host: &'a str,
    /// Raw (percent-encoded) path.
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Some only when [`wants_body`] said yes and the body was small enough.
    pub body: Option<&'a [u8]>,
}

impl fmt::Debug for RequestParts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The query of a presigned URL and the headers carry the credentials: names and sizes only.
        f.debug_struct("RequestParts")
            .field("method", self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .field("query_len", &self.query.map(str::len))
            .field(
                "header_names",
                &self.headers.keys().map(http::HeaderName::as_str).collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.map(<[u8]>::len))
            .finish()
    }
}

/// What an AWS request is. Holds no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AwsCall {
    /// The SigV4 signing name (`s3`, `dynamodb`, `monitoring`, `execute-api`, ...).
    pub service: Option<String>,
    pub region: Option<String>,
    /// The IAM action, `{iam prefix}:{action}` (`s3:GetObject`, `cloudwatch:PutMetricData`).
    pub action: Option<String>,
    /// The resource ARN, where the request tells it.
    pub resource: Option<String>,
}

/// Services whose resource is named in a JSON body.
const BODY_RESOURCE_SERVICES: &[&str] = &[
    "dynamodb",
    "sqs",
    "sns",
    "kms",
    "secretsmanager",
    "sts",
    "ssm",
    "kinesis",
    "logs",
    "events",
    "states",
    "firehose",
];

/// Whether peeking at the body (at most [`MAX_BODY_PEEK`] bytes, decided by `Content-Length`)
/// helps: form-encoded bodies (Query protocol: `Action=...`), and JSON bodies
/// (`application/x-amz-json-1.0`/`1.1`, `application/json`) of services whose resource is in the body.
/// Never for S3, whose bodies are objects.
pub fn wants_body(method: &Method, headers: &HeaderMap) -> bool {
    if !matches!(method.as_str(), "POST" | "PUT" | "PATCH") {
        return false;
    }
    let length = header_str(headers, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
    if !matches!(length, Some(1..=MAX_BODY_PEEK)) {
        return false;
    }
    let target = header_str(headers, "x-amz-target").and_then(Target::parse);
    let service = header_str(headers, "authorization")
        .and_then(Scope::from_authorization)
        .and_then(|scope| scope.service)
        .or_else(|| header_str(headers, "host").and_then(|host| Endpoint::parse(host).service))
        .or_else(|| target.as_ref().and_then(|t| t.service).map(str::to_owned));
    if service.as_deref().is_some_and(|s| s.starts_with("s3")) {
        return false;
    }
    let in_body = service.as_deref().map(|s| BODY_RESOURCE_SERVICES.contains(&s));
    match body_kind(headers) {
        Some(BodyKind::Form) => true,
        Some(BodyKind::AmzJson) => in_body.unwrap_or(true),
        Some(BodyKind::Json) => in_body.unwrap_or(target.is_some()),
        None => false,
    }
}

/// Tells what `req` is. `account` is the AWS account id used in ARNs whose account the request
/// does not reveal; without it (or when it is not 12 digits) such ARNs have `*` for the account.
pub fn analyse(req: &RequestParts<'_>, account: Option<&str>) -> AwsCall {
    let endpoint = Endpoint::parse(req.host);
    let scope = Scope::of_request(req);
    let target = header_str(req.headers, "x-amz-target").and_then(Target::parse);
    let service = scope
        .service
        .or_else(|| endpoint.service.clone())
        .or_else(|| target.as_ref().and_then(|t| t.service).map(str::to_owned));
    let region = scope.region.or_else(|| endpoint.region.clone());
    let Some(service) = service else {
        return AwsCall { region, ..AwsCall::default() };
    };
    let arns = Arns {
        partition: partition(region.as_deref(), endpoint.china),
        region: region.as_deref().unwrap_or("*"),
        account: account.filter(|a| is_account_id(a)).unwrap_or("*"),
    };
    let (action, resource) = match service.as_str() {
        "s3" => s3::analyse(req, &endpoint, &arns),
        "lambda" => lambda::analyse(req, &arns),
        "execute-api" => (Some("Invoke".to_owned()), execute_api_resource(req, &endpoint, &arns)),
        _ => rpc(req, &service, target, &arns),
    };
    AwsCall {
        action: action.map(|action| format!("{}:{action}", iam_prefix(&service))),
        service: Some(service),
        region,
        resource,
    }
}
