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

use std::fmt;

use http::{HeaderMap, Method};
use serde_json::{Map, Value};

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

// === Signature and endpoint ===

/// What the SigV4 credential scope (`AKID/20260101/us-east-1/s3/aws4_request`) says, the access key id left behind.
#[derive(Default)]
struct Scope {
    service: Option<String>,
    region: Option<String>,
}

impl Scope {
    fn of_request(req: &RequestParts<'_>) -> Scope {
        let query = req.query.map(str::as_bytes);
        let signed = header_str(req.headers, "authorization")
            .and_then(Scope::from_authorization)
            .or_else(|| {
                let credential = form_value(query?, "X-Amz-Credential")?;
                Scope::from_credential(
                    &credential,
                    form_value(query?, "X-Amz-Algorithm").as_deref(),
                )
            });
        let mut scope = signed.unwrap_or_default();
        if scope.region.is_none() {
            // SigV4a signs for a set of regions; a single one is the region of the call.
            let region_set = header_str(req.headers, "x-amz-region-set")
                .map(str::to_owned)
                .or_else(|| form_value(query?, "X-Amz-Region-Set"));
            scope.region = region_set.map(|r| r.trim().to_owned()).filter(|r| is_region(r));
        }
        scope
    }

    /// `AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, SignedHeaders=..., Signature=...`
    fn from_authorization(value: &str) -> Option<Scope> {
        let (algorithm, params) = value.trim_start().split_once(char::is_whitespace)?;
        let credential =
            params.split(',').find_map(|param| param.trim().strip_prefix("Credential="))?;
        Scope::from_credential(credential.trim(), Some(algorithm))
    }

    fn from_credential(credential: &str, algorithm: Option<&str>) -> Option<Scope> {
        let mut parts = credential.rsplit('/');
        if parts.next()? != "aws4_request" {
            return None;
        }
        let access_key_id = credential.split('/').next().unwrap_or_default();
        // Never let a malformed scope carry the access key id out as a service name.
        let service = parts
            .next()
            .filter(|s| is_service_name(s) && !s.eq_ignore_ascii_case(access_key_id))
            .map(str::to_owned);
        let region = match algorithm {
            // SigV4a: `AKID/20260101/s3/aws4_request`, the regions are in `X-Amz-Region-Set`.
            Some("AWS4-ECDSA-P256-SHA256") => None,
            Some("AWS4-HMAC-SHA256") | None => {
                parts.next().filter(|r| is_region(r)).map(str::to_owned)
            }
            Some(_) => return None,
        };
        Some(Scope { service, region })
    }
}

/// What an endpoint host name says: `bucket.s3.us-west-2.amazonaws.com`, `sqs.eu-west-1.amazonaws.com`, ...
#[derive(Default)]
struct Endpoint {
    /// The SigV4 signing name.
    service: Option<String>,
    region: Option<String>,
    /// Under `amazonaws.com.cn`.
    china: bool,
    /// S3 virtual-hosted style: the labels before `s3`.
    bucket: Option<String>,
    /// S3 access point `{name}-{account}.s3-accesspoint.{region}.amazonaws.com`: (name, account).
    access_point: Option<(String, String)>,
    /// API Gateway `{api id}.execute-api.{region}.amazonaws.com`.
    api_id: Option<String>,
    /// S3 Control (`{account}.s3-control.{region}.amazonaws.com`): signed as `s3`, not the object API.
    s3_control: bool,
}

impl Endpoint {
    fn parse(host: &str) -> Endpoint {
        let name = crate::strip_port(host.trim()).trim_end_matches('.');
        if name.is_empty() || name.len() > 253 || !name.is_ascii() {
            return Endpoint::default();
        }
        let name = name.to_ascii_lowercase();
        let (labels, china) =
            match (name.strip_suffix(".amazonaws.com.cn"), name.strip_suffix(".amazonaws.com")) {
                (Some(labels), _) => (labels, true),
                (None, Some(labels)) => (labels, false),
                (None, None) => return Endpoint::default(),
            };
        let labels: Vec<&str> = labels.split('.').collect();
        if labels.iter().any(|label| label.is_empty()) {
            return Endpoint::default();
        }
        let mut endpoint = Endpoint { china, ..Endpoint::default() };
        let mut end = labels.len();
        match labels[end - 1] {
            region if is_region(region) => {
                endpoint.region = Some(region.to_owned());
                end -= 1;
            }
            "us-gov" => {
                endpoint.region = Some("us-gov-west-1".to_owned());
                end -= 1;
            }
            _ => {}
        }
        if end > 0 && labels[end - 1] == "dualstack" {
            end -= 1;
        }
        let Some((&label, prefix)) = labels[..end].split_last() else {
            return endpoint;
        };
        let label = label.strip_suffix("-fips").unwrap_or(label);
        // Legacy `s3-us-west-2`, `s3-website-us-west-2`, `s3-fips-us-gov-west-1`.
        let legacy_s3_region = label
            .strip_prefix("s3-")
            .map(|r| r.strip_prefix("website-").or_else(|| r.strip_prefix("fips-")).unwrap_or(r))
            .filter(|r| is_region(r));
        let service = match label {
            "s3" | "s3-accelerate" | "s3-website" => {
                endpoint.bucket = bucket_from_labels(prefix);
                "s3"
            }
            "s3-external-1" => {
                endpoint.region.get_or_insert_with(|| "us-east-1".to_owned());
                endpoint.bucket = bucket_from_labels(prefix);
                "s3"
            }
            "s3-accesspoint" => {
                endpoint.access_point = match prefix {
                    [label] => label.rsplit_once('-').filter(|(name, account)| {
                        is_access_point_name(name) && is_account_id(account)
                    }),
                    _ => None,
                }
                .map(|(name, account)| (name.to_owned(), account.to_owned()));
                "s3"
            }
            "s3-control" => {
                endpoint.s3_control = true;
                "s3"
            }
            // Multi-Region Access Points, `{alias}.accesspoint.s3-global.amazonaws.com`.
            "s3-global" => "s3",
            _ if legacy_s3_region.is_some() => {
                endpoint.region = legacy_s3_region.map(str::to_owned);
                endpoint.bucket = bucket_from_labels(prefix);
                "s3"
            }
            express if express.starts_with("s3express") => "s3express",
            // Legacy SQS: `queue.amazonaws.com`, `us-west-2.queue.amazonaws.com`.
            "queue" => {
                if let [region] = prefix {
                    if is_region(region) {
                        endpoint.region = Some((*region).to_owned());
                    }
                }
                "sqs"
            }
            "email" => "ses",
            "bedrock-runtime" | "bedrock-agent" | "bedrock-agent-runtime" => "bedrock",
            "iot" if matches!(prefix.last(), Some(&("data" | "data-ats"))) => "iotdata",
            "execute-api" => {
                endpoint.api_id = match prefix {
                    [id] => token(id, 64, "").map(str::to_owned),
                    _ => None,
                };
                "execute-api"
            }
            other if is_service_name(other) => other,
            _ => return endpoint,
        };
        // Global endpoints (`sts.amazonaws.com`, `iam.amazonaws.com`, `s3.amazonaws.com`) are in the partition's first region.
        if endpoint.region.is_none() && label != "s3-accelerate" {
            endpoint.region = Some(if china { "cn-north-1" } else { "us-east-1" }.to_owned());
        }
        endpoint.service = Some(service.to_owned());
        endpoint
    }
}

fn bucket_from_labels(labels: &[&str]) -> Option<String> {
    if labels.is_empty() {
        return None;
    }
    let bucket = labels.join(".");
    is_bucket_name(&bucket).then_some(bucket)
}

/// `X-Amz-Target: DynamoDB_20120810.GetItem`.
struct Target {
    operation: String,
    /// The signing name the target prefix belongs to, for requests that say nothing else.
    service: Option<&'static str>,
}

impl Target {
    fn parse(value: &str) -> Option<Target> {
        let (prefix, operation) = value.trim().rsplit_once('.')?;
        if !is_operation_name(operation) {
            return None;
        }
        const PREFIXES: &[(&str, &str)] = &[
            ("DynamoDBStreams_", "dynamodb"),
            ("DynamoDB_", "dynamodb"),
            ("AmazonSQS", "sqs"),
            ("TrentService", "kms"),
            ("secretsmanager", "secretsmanager"),
            ("Logs_", "logs"),
            ("AWSEvents", "events"),
            ("Kinesis_", "kinesis"),
            ("AmazonSSM", "ssm"),
            ("AWSStepFunctions", "states"),
            ("Firehose_", "firehose"),
            ("AWSCognitoIdentityProviderService", "cognito-idp"),
            ("AmazonEC2ContainerRegistry_", "ecr"),
            ("AmazonEC2ContainerServiceV", "ecs"),
            ("GraniteServiceVersion", "monitoring"),
        ];
        let service =
            PREFIXES.iter().find(|(p, _)| prefix.starts_with(p)).map(|(_, service)| *service);
        Some(Target { operation: operation.to_owned(), service })
    }
}

/// The IAM action prefix of a signing name.
fn iam_prefix(service: &str) -> &str {
    match service {
        "monitoring" => "cloudwatch",
        "email" => "ses",
        "iotdata" => "iot",
        "tagging" => "tag",
        other => other,
    }
}

fn partition(region: Option<&str>, china_host: bool) -> &'static str {
    let Some(region) = region else {
        return if china_host { "aws-cn" } else { "aws" };
    };
    const PARTITIONS: &[(&str, &str)] = &[
        ("cn-", "aws-cn"),
        ("us-gov-", "aws-us-gov"),
        ("us-isob-", "aws-iso-b"),
        ("us-iso-", "aws-iso"),
        ("eu-isoe-", "aws-iso-e"),
        ("us-isof-", "aws-iso-f"),
    ];
    PARTITIONS
        .iter()
        .find(|(prefix, _)| region.starts_with(prefix))
        .map_or("aws", |(_, partition)| partition)
}

/// The parts of an ARN the request does not tell itself.
#[derive(Clone, Copy)]
struct Arns<'a> {
    partition: &'a str,
    /// A region or `*`.
    region: &'a str,
    /// An account id or `*`.
    account: &'a str,
}

impl Arns<'_> {
    fn arn(&self, service: &str, resource: &str) -> Option<String> {
        let resource = clean(resource)?;
        let arn =
            format!("arn:{}:{service}:{}:{}:{resource}", self.partition, self.region, self.account);
        (arn.len() <= MAX_ARN_LEN).then_some(arn)
    }
}

// === RPC protocols: JSON (X-Amz-Target), Query (Action=), Smithy RPCv2 ===

fn rpc(
    req: &RequestParts<'_>,
    service: &str,
    target: Option<Target>,
    arns: &Arns<'_>,
) -> (Option<String>, Option<String>) {
    let params = Params::new(req);
    let operation = target
        .map(|t| t.operation)
        .or_else(|| params.query_value("Action").filter(|a| is_operation_name(a)))
        .or_else(|| rpc_v2_operation(req.path))
        .or_else(|| params.form_value("Action").filter(|a| is_operation_name(a)));
    let Some(operation) = operation else {
        return (None, None);
    };
    let resource = rpc_resource(service, &operation, &params, req.path, arns);
    let action = match (service, operation.as_str()) {
        ("sqs", "SendMessageBatch") => "SendMessage",
        ("sqs", "DeleteMessageBatch") => "DeleteMessage",
        ("sqs", "ChangeMessageVisibilityBatch") => "ChangeMessageVisibility",
        ("sns", "PublishBatch") => "Publish",
        (_, operation) => operation,
    };
    (Some(action.to_owned()), resource)
}

/// Smithy RPCv2 (CBOR): `POST /service/GraniteServiceVersion20100801/operation/PutMetricData`.
fn rpc_v2_operation(path: &str) -> Option<String> {
    let (_, operation) = path.strip_prefix("/service/")?.split_once("/operation/")?;
    is_operation_name(operation).then(|| operation.to_owned())
}

fn rpc_resource(
    service: &str,
    operation: &str,
    params: &Params<'_>,
    path: &str,
    arns: &Arns<'_>,
) -> Option<String> {
    match service {
        "dynamodb" => dynamodb_resource(params, arns),
        "sqs" => sqs_resource(params, path, arns),
        "sns" => ["TopicArn", "TargetArn", "SubscriptionArn", "ResourceArn"]
            .iter()
            .find_map(|name| params.get(name))
            .and_then(|arn| arn_value(&arn))
            .or_else(|| {
                let name = params.get("Name").filter(|_| operation == "CreateTopic")?;
                arns.arn("sns", token(&name, 256, "-_.")?)
            }),
        "kms" => kms_key(&params.get("KeyId")?, arns),
        "secretsmanager" => {
            let id = params
                .get("SecretId")
                .or_else(|| params.get("Name").filter(|_| operation == "CreateSecret"))?;
            if id.starts_with("arn:") {
                arn_value(&id)
            } else {
                arns.arn("secretsmanager", &format!("secret:{}", token(&id, 512, "/_+=.@-")?))
            }
        }
        "sts" => match operation {
            "AssumeRole" | "AssumeRoleWithWebIdentity" | "AssumeRoleWithSAML" => {
                arn_value(&params.get("RoleArn")?)
            }
            _ => None,
        },
        "ssm" if operation.contains("Parameter") => {
            let name = params
                .get("Name")
                .or_else(|| params.get("Path"))
                .or_else(|| params.json_array_first("Names")?.as_str().map(str::to_owned))?;
            if name.starts_with("arn:") {
                arn_value(&name)
            } else {
                arns.arn(
                    "ssm",
                    &format!(
                        "parameter/{}",
                        token(&name, MAX_VALUE_LEN, "/_.-")?.trim_start_matches('/')
                    ),
                )
            }
        }
        "kinesis" => params.get("StreamARN").and_then(|arn| arn_value(&arn)).or_else(|| {
            let name = params.get("StreamName")?;
            arns.arn("kinesis", &format!("stream/{}", token(&name, 128, "_.-")?))
        }),
        "firehose" => {
            let name = params.get("DeliveryStreamName")?;
            arns.arn("firehose", &format!("deliverystream/{}", token(&name, 64, "_.-")?))
        }
        "logs" => {
            let group = params.get("logGroupName")?;
            let group = token(&group, 512, "_-/.#")?;
            match params.get("logStreamName") {
                Some(stream) if !stream.contains([':', '*']) => {
                    arns.arn("logs", &format!("log-group:{group}:log-stream:{stream}"))
                }
                Some(_) => None,
                None => arns.arn("logs", &format!("log-group:{group}")),
            }
        }
        "events" if operation == "PutEvents" => {
            let bus = params
                .get("EventBusName")
                .or_else(|| {
                    params
                        .json_array_first("Entries")?
                        .get("EventBusName")?
                        .as_str()
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| "default".to_owned());
            if bus.starts_with("arn:") {
                arn_value(&bus)
            } else {
                arns.arn("events", &format!("event-bus/{}", token(&bus, 256, "/_.-")?))
            }
        }
        "states" => params
            .get("stateMachineArn")
            .or_else(|| params.get("executionArn"))
            .and_then(|arn| arn_value(&arn)),
        _ => None,
    }
}

fn dynamodb_resource(params: &Params<'_>, arns: &Arns<'_>) -> Option<String> {
    let json = params.json.as_ref();
    let table = params
        .get("TableName")
        .or_else(|| json?.get("RequestItems")?.as_object()?.keys().next().cloned())
        .or_else(|| {
            let item = json?.get("TransactItems")?.as_array()?.first()?.as_object()?;
            item.values().find_map(|op| op.get("TableName")?.as_str()).map(str::to_owned)
        });
    match table {
        Some(table) if table.starts_with("arn:") => arn_value(&table),
        Some(table) => arns.arn("dynamodb", &format!("table/{}", token(&table, 255, "_.-")?)),
        None => params
            .get("StreamArn")
            .or_else(|| params.get("ResourceArn"))
            .and_then(|arn| arn_value(&arn)),
    }
}

fn sqs_resource(params: &Params<'_>, path: &str, arns: &Arns<'_>) -> Option<String> {
    if let Some(url) = params.get("QueueUrl") {
        return sqs_queue_url(&url, arns);
    }
    if let Some(name) = params.get("QueueName") {
        let owner = params.get("QueueOwnerAWSAccountId").filter(|a| is_account_id(a));
        let arns = Arns { account: owner.as_deref().unwrap_or(arns.account), ..*arns };
        return arns.arn("sqs", token(&name, 80, "-_.")?);
    }
    // Query protocol sent to the queue URL itself: `POST /123456789012/orders`.
    sqs_queue_url(path, arns)
}

/// `https://sqs.us-east-1.amazonaws.com/123456789012/orders` → `arn:aws:sqs:us-east-1:123456789012:orders`.
fn sqs_queue_url(url: &str, arns: &Arns<'_>) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).unwrap_or(url);
    let (host, path) = rest.split_once('/')?;
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let (account, name) = (segments.next()?, segments.next()?);
    if segments.next().is_some() || !is_account_id(account) {
        return None;
    }
    let endpoint = Endpoint::parse(host);
    let region = endpoint.region.as_deref().filter(|_| endpoint.service.as_deref() == Some("sqs"));
    let arns = match region {
        Some(region) => {
            Arns { partition: partition(Some(region), endpoint.china), region, account }
        }
        None => Arns { account, ..*arns },
    };
    arns.arn("sqs", token(name, 80, "-_.")?)
}

fn kms_key(id: &str, arns: &Arns<'_>) -> Option<String> {
    if id.starts_with("arn:") {
        arn_value(id)
    } else if let Some(alias) = id.strip_prefix("alias/") {
        arns.arn("kms", &format!("alias/{}", token(alias, 256, "/_-")?))
    } else {
        arns.arn("kms", &format!("key/{}", token(id, 128, "-")?))
    }
}

/// `{api id}/{stage}/{METHOD}/{path}`, the resource IAM checks `execute-api:Invoke` against.
fn execute_api_resource(
    req: &RequestParts<'_>,
    endpoint: &Endpoint,
    arns: &Arns<'_>,
) -> Option<String> {
    let api = endpoint.api_id.as_deref()?;
    let path = percent_decode_str(req.path.strip_prefix('/')?, false)?;
    let (stage, rest) = path.split_once('/').unwrap_or((path.as_str(), ""));
    let stage = token(stage, 128, "_-")?;
    let method = token(req.method.as_str(), 16, "")?;
    arns.arn("execute-api", &format!("{api}/{stage}/{method}/{rest}"))
}

/// The identifying fields of a request: JSON body, form body, query string, in that order.
struct Params<'a> {
    json: Option<Map<String, Value>>,
    form: Option<&'a [u8]>,
    query: Option<&'a [u8]>,
}

impl<'a> Params<'a> {
    fn new(req: &RequestParts<'a>) -> Params<'a> {
        let body = req.body.filter(|body| !body.is_empty() && body.len() <= MAX_BODY_PEEK);
        let kind = body.map(|body| match body_kind(req.headers) {
            Some(BodyKind::Form) => BodyKind::Form,
            Some(BodyKind::Json | BodyKind::AmzJson) => BodyKind::Json,
            None if body.trim_ascii_start().starts_with(b"{") => BodyKind::Json,
            None => BodyKind::Form,
        });
        let json = match (kind, body) {
            (Some(BodyKind::Json), Some(body)) => match serde_json::from_slice(body) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            },
            _ => None,
        };
        Params {
            json,
            form: body.filter(|_| kind == Some(BodyKind::Form)),
            query: req.query.map(str::as_bytes),
        }
    }

    /// A string field, wherever it is.
    fn get(&self, name: &str) -> Option<String> {
        match self.json.as_ref().and_then(|json| json.get(name)) {
            Some(Value::String(value)) => Some(value.clone()),
            _ => self.form_value(name).or_else(|| self.query_value(name)),
        }
    }

    fn form_value(&self, name: &str) -> Option<String> {
        form_value(self.form?, name)
    }

    fn query_value(&self, name: &str) -> Option<String> {
        form_value(self.query?, name)
    }

    fn json_array_first(&self, name: &str) -> Option<&Value> {
        self.json.as_ref()?.get(name)?.as_array()?.first()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Form,
    /// `application/x-amz-json-1.0` / `1.1`: the AWS JSON protocol.
    AmzJson,
    Json,
}

fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
    let content_type = header_str(headers, "content-type")?;
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    if media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(BodyKind::Form)
    } else if media_type.get(..22).is_some_and(|p| p.eq_ignore_ascii_case("application/x-amz-json"))
    {
        Some(BodyKind::AmzJson)
    } else if media_type.eq_ignore_ascii_case("application/json") {
        Some(BodyKind::Json)
    } else {
        None
    }
}

// === S3 ===

mod s3 {
    use super::{
        is_account_id, is_bucket_name, percent_decode, percent_decode_str, Arns, Endpoint,
        RequestParts, MAX_VALUE_LEN,
    };

    /// Sub-resources of a bucket and the IAM actions of GET, PUT and DELETE on them ("" when there is none).
    const BUCKET_SUBRESOURCES: &[(&str, &str, &str, &str)] = &[
        ("policy", "GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"),
        ("acl", "GetBucketAcl", "PutBucketAcl", ""),
        ("versioning", "GetBucketVersioning", "PutBucketVersioning", ""),
        ("tagging", "GetBucketTagging", "PutBucketTagging", "PutBucketTagging"),
        ("cors", "GetBucketCORS", "PutBucketCORS", "PutBucketCORS"),
        (
            "lifecycle",
            "GetLifecycleConfiguration",
            "PutLifecycleConfiguration",
            "PutLifecycleConfiguration",
        ),
        (
            "encryption",
            "GetEncryptionConfiguration",
            "PutEncryptionConfiguration",
            "PutEncryptionConfiguration",
        ),
        ("website", "GetBucketWebsite", "PutBucketWebsite", "DeleteBucketWebsite"),
        ("logging", "GetBucketLogging", "PutBucketLogging", ""),
        ("notification", "GetBucketNotification", "PutBucketNotification", ""),
        (
            "replication",
            "GetReplicationConfiguration",
            "PutReplicationConfiguration",
            "PutReplicationConfiguration",
        ),
        (
            "publicAccessBlock",
            "GetBucketPublicAccessBlock",
            "PutBucketPublicAccessBlock",
            "PutBucketPublicAccessBlock",
        ),
        (
            "ownershipControls",
            "GetBucketOwnershipControls",
            "PutBucketOwnershipControls",
            "PutBucketOwnershipControls",
        ),
        ("policyStatus", "GetBucketPolicyStatus", "", ""),
        ("object-lock", "GetBucketObjectLockConfiguration", "PutBucketObjectLockConfiguration", ""),
        ("requestPayment", "GetBucketRequestPayment", "PutBucketRequestPayment", ""),
        ("accelerate", "GetAccelerateConfiguration", "PutAccelerateConfiguration", ""),
        (
            "analytics",
            "GetAnalyticsConfiguration",
            "PutAnalyticsConfiguration",
            "PutAnalyticsConfiguration",
        ),
        (
            "metrics",
            "GetMetricsConfiguration",
            "PutMetricsConfiguration",
            "PutMetricsConfiguration",
        ),
        (
            "inventory",
            "GetInventoryConfiguration",
            "PutInventoryConfiguration",
            "PutInventoryConfiguration",
        ),
        (
            "intelligent-tiering",
            "GetIntelligentTieringConfiguration",
            "PutIntelligentTieringConfiguration",
            "PutIntelligentTieringConfiguration",
        ),
        ("location", "GetBucketLocation", "", ""),
        // ListMultipartUploads, ListObjectVersions.
        ("uploads", "ListBucketMultipartUploads", "", ""),
        ("versions", "ListBucketVersions", "", ""),
    ];

    /// Parameters of ListObjects and ListObjectsV2.
    const LIST_PARAMS: &[&str] = &[
        "list-type",
        "prefix",
        "delimiter",
        "marker",
        "max-keys",
        "encoding-type",
        "continuation-token",
        "fetch-owner",
        "start-after",
    ];

    /// What an action applies to.
    #[derive(Clone, Copy)]
    enum Applies {
        Service,
        Bucket,
        Object,
        /// Some objects of the bucket (DeleteObjects names them in the body).
        Objects,
    }

    /// Where the objects are: a bucket or an access point.
    enum Container {
        Bucket(String),
        AccessPoint { name: String, account: String },
    }

    /// API names and IAM action names differ: HeadObject is `s3:GetObject`, ListObjectsV2 `s3:ListBucket`, ...
    pub(super) fn analyse(
        req: &RequestParts<'_>,
        endpoint: &Endpoint,
        arns: &Arns<'_>,
    ) -> (Option<String>, Option<String>) {
        if endpoint.s3_control {
            return (None, None);
        }
        let path = req.path.strip_prefix('/').unwrap_or(req.path);
        let (has_bucket, container, key) = if let Some((name, account)) = &endpoint.access_point {
            (
                true,
                Some(Container::AccessPoint { name: name.clone(), account: account.clone() }),
                path,
            )
        } else if let Some(bucket) = &endpoint.bucket {
            (true, Some(Container::Bucket(bucket.clone())), path)
        } else {
            let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
            let container = percent_decode_str(bucket, false)
                .filter(|b| is_bucket_name(b))
                .map(Container::Bucket);
            (!bucket.is_empty(), container, key)
        };
        let has_key = !key.is_empty();
        let query = Query::parse(req.query);
        let Some((action, applies)) = action(req.method.as_str(), has_bucket, has_key, &query)
        else {
            return (None, None);
        };
        let resource = match (applies, container) {
            (Applies::Service, _) | (_, None) => None,
            (Applies::Bucket, Some(container)) => container_arn(&container, arns),
            (Applies::Objects, Some(container)) => object_arn(&container, "*", arns),
            (Applies::Object, Some(container)) => {
                object_key(key).and_then(|key| object_arn(&container, &key, arns))
            }
        };
        (Some(action.to_owned()), resource)
    }

    fn action(
        method: &str,
        has_bucket: bool,
        has_key: bool,
        query: &Query,
    ) -> Option<(&'static str, Applies)> {
        let versioned = query.has("versionId");
        let version = |plain: &'static str, of_version: &'static str| {
            if versioned {
                of_version
            } else {
                plain
            }
        };
        if !has_bucket {
            return (method == "GET").then_some(("ListAllMyBuckets", Applies::Service));
        }
        if !has_key {
            let sub = BUCKET_SUBRESOURCES.iter().find(|(name, ..)| query.has(name));
            let action = match (method, sub) {
                ("GET", Some(&(_, get, _, _))) => get,
                ("GET", None) if query.only(LIST_PARAMS) => "ListBucket",
                ("HEAD", _) => "ListBucket",
                ("PUT", Some(&(_, _, put, _))) => put,
                ("PUT", None) if query.only(&[]) => "CreateBucket",
                ("DELETE", Some(&(_, _, _, delete))) => delete,
                ("DELETE", None) if query.only(&[]) => "DeleteBucket",
                ("POST", _) if query.has("delete") => {
                    return Some(("DeleteObject", Applies::Objects))
                }
                _ => return None,
            };
            return (!action.is_empty()).then_some((action, Applies::Bucket));
        }
        let action = match method {
            "GET" if query.has("uploadId") => "ListMultipartUploadParts",
            "GET" if query.has("tagging") => version("GetObjectTagging", "GetObjectVersionTagging"),
            "GET" if query.has("acl") => version("GetObjectAcl", "GetObjectVersionAcl"),
            "GET" if query.has("attributes") => {
                version("GetObjectAttributes", "GetObjectVersionAttributes")
            }
            "GET" if query.has("retention") => "GetObjectRetention",
            "GET" if query.has("legal-hold") => "GetObjectLegalHold",
            "GET" if query.has("torrent") => version("GetObjectTorrent", "GetObjectVersionTorrent"),
            "GET" | "HEAD" => version("GetObject", "GetObjectVersion"),
            // UploadPart, UploadPartCopy, CopyObject (`x-amz-copy-source`) and PutObject all need `s3:PutObject`.
            "PUT" if query.has("uploadId") => "PutObject",
            "PUT" if query.has("tagging") => version("PutObjectTagging", "PutObjectVersionTagging"),
            "PUT" if query.has("acl") => version("PutObjectAcl", "PutObjectVersionAcl"),
            "PUT" if query.has("retention") => "PutObjectRetention",
            "PUT" if query.has("legal-hold") => "PutObjectLegalHold",
            "PUT" => "PutObject",
            // CreateMultipartUpload, CompleteMultipartUpload.
            "POST" if query.has("uploads") || query.has("uploadId") => "PutObject",
            "POST" if query.has("restore") => "RestoreObject",
            "POST" if query.has("select") => "GetObject",
            "DELETE" if query.has("uploadId") => "AbortMultipartUpload",
            "DELETE" if query.has("tagging") => {
                version("DeleteObjectTagging", "DeleteObjectVersionTagging")
            }
            "DELETE" => version("DeleteObject", "DeleteObjectVersion"),
            _ => return None,
        };
        Some((action, Applies::Object))
    }

    fn container_arn(container: &Container, arns: &Arns<'_>) -> Option<String> {
        match container {
            Container::Bucket(bucket) => Some(format!("arn:{}:s3:::{bucket}", arns.partition)),
            Container::AccessPoint { name, account } if is_account_id(account) => Some(format!(
                "arn:{}:s3:{}:{account}:accesspoint/{name}",
                arns.partition, arns.region
            )),
            Container::AccessPoint { .. } => None,
        }
    }

    fn object_arn(container: &Container, key: &str, arns: &Arns<'_>) -> Option<String> {
        let arn = match container {
            Container::Bucket(_) => format!("{}/{key}", container_arn(container, arns)?),
            Container::AccessPoint { .. } => {
                format!("{}/object/{key}", container_arn(container, arns)?)
            }
        };
        (arn.len() <= super::MAX_ARN_LEN).then_some(arn)
    }

    /// The percent-decoded key, when it is one S3 could hold and fit for an ARN.
    fn object_key(raw: &str) -> Option<String> {
        let key = String::from_utf8(percent_decode(raw.as_bytes(), false)).ok()?;
        (key.len() <= MAX_VALUE_LEN && !key.chars().any(char::is_control)).then_some(key)
    }

    /// The names of the query parameters, decoded.
    struct Query {
        names: Vec<String>,
    }

    impl Query {
        fn parse(query: Option<&str>) -> Query {
            let names = query
                .unwrap_or_default()
                .split('&')
                .filter(|pair| !pair.is_empty())
                .take(100)
                .filter_map(|pair| {
                    String::from_utf8(percent_decode(
                        pair.split('=').next().unwrap_or_default().as_bytes(),
                        true,
                    ))
                    .ok()
                })
                .collect();
            Query { names }
        }

        fn has(&self, name: &str) -> bool {
            self.names.iter().any(|n| n == name)
        }

        /// Whether every parameter is in `allowed` or says nothing about the operation
        /// (the signature of a presigned URL, the SDKs' `x-id`).
        fn only(&self, allowed: &[&str]) -> bool {
            self.names.iter().all(|n| {
                allowed.contains(&n.as_str())
                    || n == "x-id"
                    || n.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("x-amz-"))
            })
        }
    }
}

// === Lambda ===

mod lambda {
    use super::{
        form_value, is_account_id, is_region, partition, percent_decode_str, token, Arns,
        RequestParts,
    };

    /// The REST paths of the Lambda API (`/2015-03-31/functions/{name}/invocations`), as IAM actions.
    pub(super) fn analyse(
        req: &RequestParts<'_>,
        arns: &Arns<'_>,
    ) -> (Option<String>, Option<String>) {
        let Some(path) = req.path.strip_prefix('/') else {
            return (None, None);
        };
        let segments: Vec<&str> = path.splitn(5, '/').collect();
        let (version, functions, rest) = match segments.as_slice() {
            [version, functions, rest @ ..] => (*version, *functions, rest),
            _ => return (None, None),
        };
        if !matches!(version, "2015-03-31" | "2021-11-15") || functions != "functions" {
            return (None, None);
        }
        let (action, function) = match (req.method.as_str(), rest) {
            ("GET", [] | [""]) => ("ListFunctions", None),
            ("POST", [] | [""]) => ("CreateFunction", None),
            ("GET", [name]) => ("GetFunction", Some(*name)),
            ("DELETE", [name]) => ("DeleteFunction", Some(*name)),
            ("POST", [name, "invocations" | "response-streaming-invocations"]) => {
                ("InvokeFunction", Some(*name))
            }
            ("GET", [name, "configuration"]) => ("GetFunctionConfiguration", Some(*name)),
            ("PUT", [name, "configuration"]) => ("UpdateFunctionConfiguration", Some(*name)),
            ("PUT", [name, "code"]) => ("UpdateFunctionCode", Some(*name)),
            ("GET", [name, "versions"]) => ("ListVersionsByFunction", Some(*name)),
            ("POST", [name, "versions"]) => ("PublishVersion", Some(*name)),
            ("GET", [name, "aliases"]) => ("ListAliases", Some(*name)),
            ("GET", [name, "policy"]) => ("GetPolicy", Some(*name)),
            _ => return (None, None),
        };
        let qualifier = req.query.and_then(|q| form_value(q.as_bytes(), "Qualifier"));
        let resource = function.and_then(|name| {
            function_arn(&percent_decode_str(name, false)?, qualifier.as_deref(), arns)
        });
        (Some(action.to_owned()), resource)
    }

    /// A function name, partial ARN (`123456789012:function:name`) or ARN, optionally with a qualifier.
    fn function_arn(name: &str, qualifier: Option<&str>, arns: &Arns<'_>) -> Option<String> {
        let parts: Vec<&str> = name.splitn(9, ':').collect();
        let (arns, function, own_qualifier) = match parts.as_slice() {
            ["arn", partition_name, "lambda", region, account, "function", function, rest @ ..]
                if rest.len() <= 1 && is_region(region) && is_account_id(account) =>
            {
                if *partition_name != partition(Some(region), false) {
                    return None;
                }
                (
                    Arns { partition: partition_name, region, account },
                    *function,
                    rest.first().copied(),
                )
            }
            [account, "function", function, rest @ ..]
                if rest.len() <= 1 && is_account_id(account) =>
            {
                (Arns { account, ..*arns }, *function, rest.first().copied())
            }
            [function] => (*arns, *function, None),
            [function, qualifier] => (*arns, *function, Some(*qualifier)),
            _ => return None,
        };
        let function = token(function, 140, "_-")?;
        match own_qualifier.or(qualifier) {
            Some(qualifier) => arns
                .arn("lambda", &format!("function:{function}:{}", token(qualifier, 128, "$_-")?)),
            None => arns.arn("lambda", &format!("function:{function}")),
        }
    }
}

// === Names and encodings ===

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `us-isob-east-1`, ...
fn is_region(value: &str) -> bool {
    let Some((head, number)) = value.rsplit_once('-') else {
        return false;
    };
    let Some((area, words)) = head.split_once('-') else {
        return false;
    };
    let lower = |s: &str| (1..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_lowercase());
    area.len() == 2
        && lower(area)
        && words.split('-').count() <= 3
        && words.split('-').all(lower)
        && (1..=2).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// A SigV4 signing name: `s3`, `execute-api`, `s3-object-lambda`.
fn is_service_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An API operation name: `GetItem`, `SendMessage`.
fn is_operation_name(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

/// Bucket names, including the legacy ones of us-east-1 (capitals, underscores, up to 255).
fn is_bucket_name(value: &str) -> bool {
    token(value, 255, ".-_").is_some()
}

fn is_access_point_name(value: &str) -> bool {
    token(value, 50, "-").is_some()
}

/// `value` when it is 1..=`max` bytes of ASCII letters, digits and the bytes of `extra`.
fn token<'v>(value: &'v str, max: usize, extra: &str) -> Option<&'v str> {
    (!value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b)))
    .then_some(value)
}

/// `value` when it is fit to be part of an ARN: not empty, not too long, no control characters.
fn clean(value: &str) -> Option<&str> {
    (!value.is_empty() && value.len() <= MAX_ARN_LEN && !value.chars().any(char::is_control))
        .then_some(value)
}

/// An ARN given in the request (`TopicArn`, `SecretId`, ...), when it looks like one.
fn arn_value(value: &str) -> Option<String> {
    let value = clean(value.trim())?;
    let mut parts = value.split(':');
    let well_formed = parts.next() == Some("arn")
        && parts.next().is_some_and(|p| token(p, 16, "-").is_some())
        && parts.next().is_some_and(is_service_name)
        && parts.clone().count() >= 3
        && !value.contains(char::is_whitespace);
    well_formed.then(|| value.to_owned())
}

/// The decoded value of the first `name=value` pair of a form body or query string.
fn form_value(data: &[u8], name: &str) -> Option<String> {
    data.split(|&b| b == b'&').find_map(|pair| {
        let (key, value) = match pair.iter().position(|&b| b == b'=') {
            Some(at) => (&pair[..at], &pair[at + 1..]),
            None => (pair, &pair[pair.len()..]),
        };
        if key.len() > 3 * name.len()
            || percent_decode(key, true) != name.as_bytes()
            || value.len() > 3 * MAX_ARN_LEN
        {
            return None;
        }
        String::from_utf8(percent_decode(value, true)).ok()
    })
}

fn percent_decode_str(value: &str, plus_is_space: bool) -> Option<String> {
    String::from_utf8(percent_decode(value.as_bytes(), plus_is_space)).ok()
}

/// Decodes `%XX` escapes (and `+` in forms); a bad escape stays as it is.
fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' => match (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push((high << 4) | low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SIGNATURE: &str = "fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024";
    const SESSION_TOKEN: &str =
        "IQoJb3JpZ2luX2VjEHYaCXVzLWVhc3QtMSJHMEUCIQDexampleSessionTokenValue";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const ACCOUNT: &str = "123456789012";
    const USER_AGENT: &str = "Boto3/1.35.0 md/Botocore#1.35.0 ua/2.0 os/linux#6.1.0 md/arch#x86_64 lang/python#3.12.3 md/pyimpl#CPython \
                              cfg/retry-mode#legacy Botocore/1.35.0";

    /// A request as a proxy sees it, built the way botocore sends them.
    struct Request {
        method: Method,
        host: String,
        path: String,
        query: Option<String>,
        headers: HeaderMap,
        body: Vec<u8>,
    }

    impl Request {
        fn new(method: &str, host: &str, path_and_query: &str) -> Request {
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
        fn signed(self, service: &str, region: &str) -> Request {
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

        fn header(mut self, name: &str, value: &str) -> Request {
            self.headers.insert(
                HeaderName::from_bytes(name.as_bytes()).expect("header name"),
                HeaderValue::from_str(value).expect("header value"),
            );
            self
        }

        fn body(mut self, content_type: &str, body: &str) -> Request {
            self.body = body.as_bytes().to_vec();
            self.header("content-type", content_type)
                .header("content-length", &body.len().to_string())
        }

        /// The AWS JSON protocol: `X-Amz-Target` and an `application/x-amz-json-*` body.
        fn json(self, target: &str, version: &str, body: &str) -> Request {
            self.header("x-amz-target", target)
                .body(&format!("application/x-amz-json-{version}"), body)
        }

        /// The Query protocol: a form body.
        fn form(self, body: &str) -> Request {
            self.body("application/x-www-form-urlencoded; charset=utf-8", body)
        }

        fn parts(&self) -> RequestParts<'_> {
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

        fn analyse(&self, account: Option<&str>) -> AwsCall {
            analyse(&self.parts(), account)
        }
    }

    fn call(service: &str, region: &str, action: Option<&str>, resource: Option<&str>) -> AwsCall {
        AwsCall {
            service: Some(service.to_owned()),
            region: Some(region.to_owned()),
            action: action.map(str::to_owned),
            resource: resource.map(str::to_owned),
        }
    }

    // === STS, SNS and the Query protocol ===

    #[test]
    fn sts_get_caller_identity() {
        let request = Request::new("POST", "sts.amazonaws.com", "/")
            .signed("sts", "us-east-1")
            .form("Action=GetCallerIdentity&Version=2011-06-15");
        assert_eq!(
            request.analyse(Some(ACCOUNT)),
            call("sts", "us-east-1", Some("sts:GetCallerIdentity"), None)
        );
        let regional = Request::new("POST", "sts.eu-central-1.amazonaws.com", "/")
            .signed("sts", "eu-central-1")
            .form("Action=GetCallerIdentity&Version=2011-06-15");
        assert_eq!(
            regional.analyse(None),
            call("sts", "eu-central-1", Some("sts:GetCallerIdentity"), None)
        );
    }

    #[test]
    fn sts_assume_role_with_web_identity_is_unsigned() {
        // What IRSA pods send: no Authorization, the web identity token in the body.
        let request = Request::new("POST", "sts.us-west-2.amazonaws.com", "/").form(
            "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Forders-reader\
             &RoleSessionName=botocore-session-1767268800&WebIdentityToken=eyJhbGciOiJSUzI1NiIsImtpZCI6InNlY3JldC10b2tlbiJ9.payload.sig",
        );
        let result = request.analyse(None);
        assert_eq!(
            result,
            call(
                "sts",
                "us-west-2",
                Some("sts:AssumeRoleWithWebIdentity"),
                Some("arn:aws:iam::123456789012:role/orders-reader")
            )
        );
        assert!(!format!("{result:?}").contains("eyJhbGci"));
    }

    #[test]
    fn sns_publish_and_create_topic() {
        let publish = Request::new("POST", "sns.us-east-1.amazonaws.com", "/")
            .signed("sns", "us-east-1")
            .form("Action=Publish&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aorder-events&Message=hello");
        assert_eq!(
            publish.analyse(None),
            call(
                "sns",
                "us-east-1",
                Some("sns:Publish"),
                Some("arn:aws:sns:us-east-1:123456789012:order-events")
            )
        );
        let batch = Request::new("POST", "sns.us-east-1.amazonaws.com", "/").signed("sns", "us-east-1").form(
            "Action=PublishBatch&Version=2010-03-31&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aorder-events\
                 &PublishBatchRequestEntries.member.1.Id=1",
        );
        assert_eq!(batch.analyse(None).action.as_deref(), Some("sns:Publish"));
        let target = Request::new("POST", "sns.us-east-1.amazonaws.com", "/")
            .signed("sns", "us-east-1")
            .form("Action=Publish&Version=2010-03-31&TargetArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aendpoint%2FGCM%2Fapp%2Fabc&Message=hi");
        assert_eq!(
            target.analyse(None).resource.as_deref(),
            Some("arn:aws:sns:us-east-1:123456789012:endpoint/GCM/app/abc")
        );
        let create = Request::new("POST", "sns.eu-west-1.amazonaws.com", "/")
            .signed("sns", "eu-west-1")
            .form("Action=CreateTopic&Version=2010-03-31&Name=order-events");
        assert_eq!(
            create.analyse(Some(ACCOUNT)),
            call(
                "sns",
                "eu-west-1",
                Some("sns:CreateTopic"),
                Some("arn:aws:sns:eu-west-1:123456789012:order-events")
            )
        );
        assert_eq!(
            create.analyse(None).resource.as_deref(),
            Some("arn:aws:sns:eu-west-1:*:order-events")
        );
    }

    #[test]
    fn query_protocol_in_the_query_string() {
        let request = Request::new(
            "GET",
            "ec2.eu-west-1.amazonaws.com",
            "/?Action=DescribeInstances&Version=2016-11-15",
        )
        .signed("ec2", "eu-west-1");
        assert_eq!(
            request.analyse(None),
            call("ec2", "eu-west-1", Some("ec2:DescribeInstances"), None)
        );
        let iam = Request::new("POST", "iam.amazonaws.com", "/")
            .signed("iam", "us-east-1")
            .form("Action=ListRoles&Version=2010-05-08");
        assert_eq!(iam.analyse(None), call("iam", "us-east-1", Some("iam:ListRoles"), None));
    }

    #[test]
    fn signing_names_and_iam_prefixes_differ() {
        let metrics = Request::new("POST", "monitoring.us-east-1.amazonaws.com", "/")
            .signed("monitoring", "us-east-1")
            .form("Action=PutMetricData&Version=2010-08-01&Namespace=orders&MetricData.member.1.MetricName=latency");
        assert_eq!(
            metrics.analyse(None),
            call("monitoring", "us-east-1", Some("cloudwatch:PutMetricData"), None)
        );
        // Recent botocore speaks Smithy RPCv2 CBOR to CloudWatch.
        let cbor = Request::new(
            "POST",
            "monitoring.us-east-1.amazonaws.com",
            "/service/GraniteServiceVersion20100801/operation/PutMetricData",
        )
        .signed("monitoring", "us-east-1")
        .header("smithy-protocol", "rpc-v2-cbor")
        .body("application/cbor", "\u{bf}");
        assert_eq!(
            cbor.analyse(None),
            call("monitoring", "us-east-1", Some("cloudwatch:PutMetricData"), None)
        );
        // SES is signed as `ses` at `email.*`.
        let ses = Request::new("POST", "email.us-east-1.amazonaws.com", "/")
            .form("Action=SendEmail&Version=2010-12-01&Source=a%40example.com");
        assert_eq!(ses.analyse(None), call("ses", "us-east-1", Some("ses:SendEmail"), None));
    }

    // === The AWS JSON protocol ===

    #[test]
    fn dynamodb_tables() {
        let get = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
            .signed("dynamodb", "us-east-1")
            .json(
                "DynamoDB_20120810.GetItem",
                "1.0",
                r#"{"TableName": "orders", "Key": {"id": {"S": "42"}}}"#,
            );
        assert_eq!(
            get.analyse(Some(ACCOUNT)),
            call(
                "dynamodb",
                "us-east-1",
                Some("dynamodb:GetItem"),
                Some("arn:aws:dynamodb:us-east-1:123456789012:table/orders")
            )
        );
        assert_eq!(
            get.analyse(None).resource.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:*:table/orders")
        );
        assert_eq!(
            get.analyse(Some("not-an-account")).resource.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:*:table/orders")
        );

        let put = Request::new("POST", "dynamodb.eu-west-1.amazonaws.com", "/")
            .signed("dynamodb", "eu-west-1")
            .json(
                "DynamoDB_20120810.PutItem",
                "1.0",
                r#"{"TableName":"orders.v2","Item":{"id":{"S":"1"}}}"#,
            );
        assert_eq!(
            put.analyse(None),
            call(
                "dynamodb",
                "eu-west-1",
                Some("dynamodb:PutItem"),
                Some("arn:aws:dynamodb:eu-west-1:*:table/orders.v2")
            )
        );

        let batch = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
            .signed("dynamodb", "us-east-1")
            .json(
                "DynamoDB_20120810.BatchWriteItem",
                "1.0",
                r#"{"RequestItems": {"orders": [{"PutRequest": {"Item": {"id": {"S": "1"}}}}]}}"#,
            );
        assert_eq!(
            batch.analyse(None),
            call(
                "dynamodb",
                "us-east-1",
                Some("dynamodb:BatchWriteItem"),
                Some("arn:aws:dynamodb:us-east-1:*:table/orders")
            )
        );
        let batch_get = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
            .signed("dynamodb", "us-east-1")
            .json(
                "DynamoDB_20120810.BatchGetItem",
                "1.0",
                r#"{"RequestItems": {"orders": {"Keys": [{"id": {"S": "1"}}]}}}"#,
            );
        assert_eq!(
            batch_get.analyse(None).resource.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:*:table/orders")
        );

        let transact = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/").signed("dynamodb", "us-east-1").json(
            "DynamoDB_20120810.TransactWriteItems",
            "1.0",
            r#"{"TransactItems": [{"Update": {"TableName": "stock", "Key": {}}}, {"Put": {"TableName": "orders"}}]}"#,
        );
        assert_eq!(
            transact.analyse(None).resource.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:*:table/stock")
        );

        let by_arn = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
            .signed("dynamodb", "us-east-1")
            .json(
                "DynamoDB_20120810.Query",
                "1.0",
                r#"{"TableName": "arn:aws:dynamodb:us-east-1:210987654321:table/shared"}"#,
            );
        assert_eq!(
            by_arn.analyse(Some(ACCOUNT)).resource.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:210987654321:table/shared")
        );

        let list = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
            .signed("dynamodb", "us-east-1")
            .json("DynamoDB_20120810.ListTables", "1.0", "{}");
        assert_eq!(
            list.analyse(None),
            call("dynamodb", "us-east-1", Some("dynamodb:ListTables"), None)
        );
    }

    #[test]
    fn sqs_json_protocol() {
        let send = Request::new("POST", "sqs.us-east-1.amazonaws.com", "/").signed("sqs", "us-east-1").json(
            "AmazonSQS.SendMessage",
            "1.0",
            r#"{"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/orders", "MessageBody": "hello"}"#,
        );
        assert_eq!(
            send.analyse(None),
            call(
                "sqs",
                "us-east-1",
                Some("sqs:SendMessage"),
                Some("arn:aws:sqs:us-east-1:123456789012:orders")
            )
        );

        let batch = Request::new("POST", "sqs.us-east-1.amazonaws.com", "/").signed("sqs", "us-east-1").json(
            "AmazonSQS.DeleteMessageBatch",
            "1.0",
            r#"{"QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo", "Entries": []}"#,
        );
        assert_eq!(
            batch.analyse(None),
            call(
                "sqs",
                "us-east-1",
                Some("sqs:DeleteMessage"),
                Some("arn:aws:sqs:us-east-1:123456789012:orders.fifo")
            )
        );

        let get_url = Request::new("POST", "sqs.eu-west-1.amazonaws.com", "/")
            .signed("sqs", "eu-west-1")
            .json("AmazonSQS.GetQueueUrl", "1.0", r#"{"QueueName": "orders"}"#);
        assert_eq!(
            get_url.analyse(Some(ACCOUNT)),
            call(
                "sqs",
                "eu-west-1",
                Some("sqs:GetQueueUrl"),
                Some("arn:aws:sqs:eu-west-1:123456789012:orders")
            )
        );
        assert_eq!(
            get_url.analyse(None).resource.as_deref(),
            Some("arn:aws:sqs:eu-west-1:*:orders")
        );
        let other_owner = Request::new("POST", "sqs.eu-west-1.amazonaws.com", "/")
            .signed("sqs", "eu-west-1")
            .json(
                "AmazonSQS.GetQueueUrl",
                "1.0",
                r#"{"QueueName": "orders", "QueueOwnerAWSAccountId": "210987654321"}"#,
            );
        assert_eq!(
            other_owner.analyse(Some(ACCOUNT)).resource.as_deref(),
            Some("arn:aws:sqs:eu-west-1:210987654321:orders")
        );
        let create = Request::new("POST", "sqs.eu-west-1.amazonaws.com", "/")
            .signed("sqs", "eu-west-1")
            .json("AmazonSQS.CreateQueue", "1.0", r#"{"QueueName": "jobs"}"#);
        assert_eq!(
            create.analyse(Some(ACCOUNT)),
            call(
                "sqs",
                "eu-west-1",
                Some("sqs:CreateQueue"),
                Some("arn:aws:sqs:eu-west-1:123456789012:jobs")
            )
        );
    }

    #[test]
    fn sqs_query_protocol() {
        let send = Request::new("POST", "sqs.eu-west-1.amazonaws.com", "/")
            .signed("sqs", "eu-west-1")
            .form("Action=SendMessage&Version=2012-11-05&QueueUrl=https%3A%2F%2Fsqs.eu-west-1.amazonaws.com%2F123456789012%2Forders&MessageBody=hello+world");
        assert_eq!(
            send.analyse(None),
            call(
                "sqs",
                "eu-west-1",
                Some("sqs:SendMessage"),
                Some("arn:aws:sqs:eu-west-1:123456789012:orders")
            )
        );
        // Older SDKs post to the queue URL itself; the legacy `queue.amazonaws.com` host.
        let to_queue =
            Request::new("POST", "us-west-2.queue.amazonaws.com", "/123456789012/orders")
                .form("Action=ReceiveMessage&MaxNumberOfMessages=10");
        assert_eq!(
            to_queue.analyse(None),
            call(
                "sqs",
                "us-west-2",
                Some("sqs:ReceiveMessage"),
                Some("arn:aws:sqs:us-west-2:123456789012:orders")
            )
        );
        let legacy_url = Request::new("POST", "queue.amazonaws.com", "/")
            .form("Action=ChangeMessageVisibilityBatch&QueueUrl=https%3A%2F%2Fqueue.amazonaws.com%2F123456789012%2Forders");
        assert_eq!(
            legacy_url.analyse(None),
            call(
                "sqs",
                "us-east-1",
                Some("sqs:ChangeMessageVisibility"),
                Some("arn:aws:sqs:us-east-1:123456789012:orders")
            )
        );
    }

    #[test]
    fn kms_keys() {
        let decrypt = |body: &str| {
            Request::new("POST", "kms.us-east-1.amazonaws.com", "/")
                .signed("kms", "us-east-1")
                .json("TrentService.Decrypt", "1.1", body)
        };
        assert_eq!(
            decrypt(r#"{"CiphertextBlob": "AQICAHh", "KeyId": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"}"#).analyse(None),
            call("kms", "us-east-1", Some("kms:Decrypt"), Some("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"))
        );
        assert_eq!(
            decrypt(r#"{"CiphertextBlob": "AQICAHh"}"#).analyse(None),
            call("kms", "us-east-1", Some("kms:Decrypt"), None)
        );
        let generate = |key: &str| {
            Request::new("POST", "kms.us-east-1.amazonaws.com", "/")
                .signed("kms", "us-east-1")
                .json(
                    "TrentService.GenerateDataKey",
                    "1.1",
                    &format!(r#"{{"KeyId": "{key}", "KeySpec": "AES_256"}}"#),
                )
                .analyse(Some(ACCOUNT))
                .resource
        };
        assert_eq!(
            generate("alias/orders").as_deref(),
            Some("arn:aws:kms:us-east-1:123456789012:alias/orders")
        );
        assert_eq!(
            generate("1234abcd-12ab-34cd-56ef-1234567890ab").as_deref(),
            Some("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
        );
        assert_eq!(
            generate("mrk-1234abcd12ab34cd56ef1234567890ab").as_deref(),
            Some("arn:aws:kms:us-east-1:123456789012:key/mrk-1234abcd12ab34cd56ef1234567890ab")
        );
        assert_eq!(generate("bad key\\u0000").as_deref(), None);
    }

    #[test]
    fn secrets_manager_secrets() {
        let get = |id: &str| {
            Request::new("POST", "secretsmanager.eu-west-1.amazonaws.com", "/")
                .signed("secretsmanager", "eu-west-1")
                .json("secretsmanager.GetSecretValue", "1.1", &format!(r#"{{"SecretId": "{id}"}}"#))
        };
        assert_eq!(
            get("prod/db").analyse(Some(ACCOUNT)),
            call(
                "secretsmanager",
                "eu-west-1",
                Some("secretsmanager:GetSecretValue"),
                Some("arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db")
            )
        );
        assert_eq!(
            get("prod/db").analyse(None).resource.as_deref(),
            Some("arn:aws:secretsmanager:eu-west-1:*:secret:prod/db")
        );
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/db-AbCdEf";
        assert_eq!(get(arn).analyse(None).resource.as_deref(), Some(arn));
    }

    #[test]
    fn other_json_services() {
        let logs = Request::new("POST", "logs.us-east-1.amazonaws.com", "/")
            .signed("logs", "us-east-1")
            .json(
                "Logs_20140328.PutLogEvents",
                "1.1",
                r#"{"logGroupName": "/aws/eks/orders", "logStreamName": "pod-1", "logEvents": []}"#,
            );
        assert_eq!(
            logs.analyse(Some(ACCOUNT)),
            call("logs", "us-east-1", Some("logs:PutLogEvents"), Some("arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/orders:log-stream:pod-1"))
        );
        let events = Request::new("POST", "events.us-east-1.amazonaws.com", "/").signed("events", "us-east-1").json(
            "AWSEvents.PutEvents",
            "1.1",
            r#"{"Entries": [{"Source": "orders", "DetailType": "created", "Detail": "{}", "EventBusName": "orders-bus"}]}"#,
        );
        assert_eq!(
            events.analyse(None),
            call(
                "events",
                "us-east-1",
                Some("events:PutEvents"),
                Some("arn:aws:events:us-east-1:*:event-bus/orders-bus")
            )
        );
        let default_bus = Request::new("POST", "events.us-east-1.amazonaws.com", "/")
            .signed("events", "us-east-1")
            .json("AWSEvents.PutEvents", "1.1", r#"{"Entries": [{"Source": "orders"}]}"#);
        assert_eq!(
            default_bus.analyse(None).resource.as_deref(),
            Some("arn:aws:events:us-east-1:*:event-bus/default")
        );
        let kinesis = Request::new("POST", "kinesis.us-east-1.amazonaws.com", "/")
            .signed("kinesis", "us-east-1")
            .json(
                "Kinesis_20131202.PutRecord",
                "1.1",
                r#"{"StreamName": "clicks", "Data": "aGk=", "PartitionKey": "a"}"#,
            );
        assert_eq!(
            kinesis.analyse(None),
            call(
                "kinesis",
                "us-east-1",
                Some("kinesis:PutRecord"),
                Some("arn:aws:kinesis:us-east-1:*:stream/clicks")
            )
        );
        let ssm = Request::new("POST", "ssm.us-east-1.amazonaws.com", "/")
            .signed("ssm", "us-east-1")
            .json(
                "AmazonSSM.GetParameter",
                "1.1",
                r#"{"Name": "/orders/db-url", "WithDecryption": true}"#,
            );
        assert_eq!(
            ssm.analyse(Some(ACCOUNT)),
            call(
                "ssm",
                "us-east-1",
                Some("ssm:GetParameter"),
                Some("arn:aws:ssm:us-east-1:123456789012:parameter/orders/db-url")
            )
        );
        let states = Request::new("POST", "states.us-east-1.amazonaws.com", "/").signed("states", "us-east-1").json(
            "AWSStepFunctions.StartExecution",
            "1.0",
            r#"{"stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:orders"}"#,
        );
        assert_eq!(
            states.analyse(None).resource.as_deref(),
            Some("arn:aws:states:us-east-1:123456789012:stateMachine:orders")
        );
    }

    // === S3 ===

    /// (method, host, path and query, extra header, IAM action, resource)
    type S3Case = (
        &'static str,
        &'static str,
        &'static str,
        Option<(&'static str, &'static str)>,
        Option<&'static str>,
        Option<&'static str>,
    );

    const S3_CASES: &[S3Case] = &[
        ("GET", "s3.us-west-2.amazonaws.com", "/", None, Some("s3:ListAllMyBuckets"), None),
        ("GET", "s3.amazonaws.com", "/?x-id=ListBuckets", None, Some("s3:ListAllMyBuckets"), None),
        // Bucket operations, virtual-hosted and path style.
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/",
            None,
            Some("s3:CreateBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "PUT",
            "s3.us-west-2.amazonaws.com",
            "/orders",
            None,
            Some("s3:CreateBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/",
            None,
            Some("s3:DeleteBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "HEAD",
            "s3.us-west-2.amazonaws.com",
            "/orders",
            None,
            Some("s3:ListBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?list-type=2&prefix=2026%2F&encoding-type=url",
            None,
            Some("s3:ListBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "s3.us-west-2.amazonaws.com",
            "/orders?list-type=2&max-keys=10&continuation-token=abc",
            None,
            Some("s3:ListBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "s3.us-west-2.amazonaws.com",
            "/orders/?prefix=a&delimiter=%2F&marker=x",
            None,
            Some("s3:ListBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/",
            None,
            Some("s3:ListBucket"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?versions&prefix=a",
            None,
            Some("s3:ListBucketVersions"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?uploads",
            None,
            Some("s3:ListBucketMultipartUploads"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?location",
            None,
            Some("s3:GetBucketLocation"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "s3.amazonaws.com",
            "/orders?location",
            None,
            Some("s3:GetBucketLocation"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?policy",
            None,
            Some("s3:GetBucketPolicy"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/?policy",
            None,
            Some("s3:PutBucketPolicy"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/?policy",
            None,
            Some("s3:DeleteBucketPolicy"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?acl",
            None,
            Some("s3:GetBucketAcl"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?versioning",
            None,
            Some("s3:GetBucketVersioning"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/?versioning",
            None,
            Some("s3:PutBucketVersioning"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?tagging",
            None,
            Some("s3:GetBucketTagging"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/?tagging",
            None,
            Some("s3:PutBucketTagging"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/?cors",
            None,
            Some("s3:PutBucketCORS"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?lifecycle",
            None,
            Some("s3:GetLifecycleConfiguration"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/?encryption",
            None,
            Some("s3:GetEncryptionConfiguration"),
            Some("arn:aws:s3:::orders"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/?publicAccessBlock",
            None,
            Some("s3:PutBucketPublicAccessBlock"),
            Some("arn:aws:s3:::orders"),
        ),
        ("GET", "orders.s3.us-west-2.amazonaws.com", "/?unknown-subresource", None, None, None),
        ("PUT", "orders.s3.us-west-2.amazonaws.com", "/?unknown-subresource", None, None, None),
        (
            "POST",
            "orders.s3.us-west-2.amazonaws.com",
            "/?delete",
            None,
            Some("s3:DeleteObject"),
            Some("arn:aws:s3:::orders/*"),
        ),
        (
            "POST",
            "s3.us-west-2.amazonaws.com",
            "/orders?delete",
            None,
            Some("s3:DeleteObject"),
            Some("arn:aws:s3:::orders/*"),
        ),
        // Object operations.
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/2026/01/report%20final.csv",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/2026/01/report final.csv"),
        ),
        (
            "GET",
            "s3.us-west-2.amazonaws.com",
            "/orders/2026/01/report%20final.csv",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/2026/01/report final.csv"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/a+b%2Bc?x-id=GetObject",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/a+b+c"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?versionId=3HL4kqtJlcpXroDTDmJ",
            None,
            Some("s3:GetObjectVersion"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?response-content-type=text%2Fplain",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "HEAD",
            "orders.s3.us-west-2.amazonaws.com",
            "/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?x-id=PutObject",
            None,
            Some("s3:PutObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "PUT",
            "s3.us-west-2.amazonaws.com",
            "/orders/dir/k",
            None,
            Some("s3:PutObject"),
            Some("arn:aws:s3:::orders/dir/k"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/copy",
            Some(("x-amz-copy-source", "source-bucket/k%201")),
            Some("s3:PutObject"),
            Some("arn:aws:s3:::orders/copy"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?x-id=DeleteObject",
            None,
            Some("s3:DeleteObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?versionId=v1",
            None,
            Some("s3:DeleteObjectVersion"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "POST",
            "orders.s3.us-west-2.amazonaws.com",
            "/big.bin?uploads",
            None,
            Some("s3:PutObject"),
            Some("arn:aws:s3:::orders/big.bin"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/big.bin?partNumber=2&uploadId=VXBsb2FkSUQ",
            None,
            Some("s3:PutObject"),
            Some("arn:aws:s3:::orders/big.bin"),
        ),
        (
            "POST",
            "orders.s3.us-west-2.amazonaws.com",
            "/big.bin?uploadId=VXBsb2FkSUQ",
            None,
            Some("s3:PutObject"),
            Some("arn:aws:s3:::orders/big.bin"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/big.bin?uploadId=VXBsb2FkSUQ",
            None,
            Some("s3:AbortMultipartUpload"),
            Some("arn:aws:s3:::orders/big.bin"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/big.bin?uploadId=VXBsb2FkSUQ&max-parts=100",
            None,
            Some("s3:ListMultipartUploadParts"),
            Some("arn:aws:s3:::orders/big.bin"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?tagging",
            None,
            Some("s3:GetObjectTagging"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?tagging",
            None,
            Some("s3:PutObjectTagging"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "PUT",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?tagging&versionId=v1",
            None,
            Some("s3:PutObjectVersionTagging"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "DELETE",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?tagging",
            None,
            Some("s3:DeleteObjectTagging"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?acl",
            None,
            Some("s3:GetObjectAcl"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "POST",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?restore",
            None,
            Some("s3:RestoreObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "POST",
            "orders.s3.us-west-2.amazonaws.com",
            "/k?select&select-type=2",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        // Bucket names with dots, other endpoint shapes.
        (
            "GET",
            "my.dotted.bucket.s3.eu-west-1.amazonaws.com",
            "/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::my.dotted.bucket/k"),
        ),
        (
            "GET",
            "orders.s3.dualstack.eu-west-1.amazonaws.com",
            "/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "s3.dualstack.eu-west-1.amazonaws.com",
            "/orders/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "orders.s3-us-west-2.amazonaws.com",
            "/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "s3-us-west-2.amazonaws.com",
            "/orders/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "orders.s3-fips.us-east-1.amazonaws.com",
            "/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "orders.s3-accelerate.amazonaws.com",
            "/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "ORDERS.S3.US-WEST-2.AMAZONAWS.COM.:443",
            "/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::orders/k"),
        ),
        (
            "GET",
            "s3.us-west-2.amazonaws.com",
            "/Legacy_Bucket/k",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:::Legacy_Bucket/k"),
        ),
        // Access points.
        (
            "GET",
            "reports-123456789012.s3-accesspoint.us-west-2.amazonaws.com",
            "/2026/q1.csv",
            None,
            Some("s3:GetObject"),
            Some("arn:aws:s3:us-west-2:123456789012:accesspoint/reports/object/2026/q1.csv"),
        ),
        (
            "GET",
            "reports-123456789012.s3-accesspoint.dualstack.us-west-2.amazonaws.com",
            "/?list-type=2",
            None,
            Some("s3:ListBucket"),
            Some("arn:aws:s3:us-west-2:123456789012:accesspoint/reports"),
        ),
        // Keys that cannot be in an ARN: the action is still known.
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/bad%0Akey",
            None,
            Some("s3:GetObject"),
            None,
        ),
        (
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/bad%FFkey",
            None,
            Some("s3:GetObject"),
            None,
        ),
        ("PATCH", "orders.s3.us-west-2.amazonaws.com", "/k", None, None, None),
        ("POST", "s3.us-west-2.amazonaws.com", "/", None, None, None),
        // S3 Control is signed as `s3` but is not the object API.
        (
            "GET",
            "123456789012.s3-control.us-west-2.amazonaws.com",
            "/v20180820/accesspoint/reports",
            None,
            None,
            None,
        ),
    ];

    #[test]
    fn s3_rest_operations() {
        for &(method, host, path_and_query, header, action, resource) in S3_CASES {
            let mut request = Request::new(method, host, path_and_query).signed("s3", "us-west-2");
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            let result = request.analyse(Some(ACCOUNT));
            assert_eq!(
                result,
                call("s3", "us-west-2", action, resource),
                "{method} {host}{path_and_query}"
            );
        }
    }

    #[test]
    fn s3_key_at_the_size_limit() {
        let long = "k".repeat(MAX_VALUE_LEN);
        let request = Request::new("GET", "orders.s3.us-west-2.amazonaws.com", &format!("/{long}"))
            .signed("s3", "us-west-2");
        assert_eq!(request.analyse(None).resource, Some(format!("arn:aws:s3:::orders/{long}")));
        let too_long =
            Request::new("GET", "orders.s3.us-west-2.amazonaws.com", &format!("/{long}k"))
                .signed("s3", "us-west-2");
        assert_eq!(too_long.analyse(None), call("s3", "us-west-2", Some("s3:GetObject"), None));
    }

    #[test]
    fn s3_presigned_urls() {
        let presigned = Request::new(
            "GET",
            "orders.s3.us-west-2.amazonaws.com",
            "/reports/2026/q1.csv?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-west-2%2Fs3%2Faws4_request\
             &X-Amz-Date=20260101T120000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024",
        );
        assert_eq!(
            presigned.analyse(None),
            call(
                "s3",
                "us-west-2",
                Some("s3:GetObject"),
                Some("arn:aws:s3:::orders/reports/2026/q1.csv")
            )
        );
        // The legacy global host says us-east-1; the signature says where the bucket is.
        let global = Request::new(
            "PUT",
            "orders.s3.amazonaws.com",
            "/upload.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAIOSFODNN7EXAMPLE%2F20260101%2Feu-west-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20260101T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=IQoJb3JpZ2luX2Vj&X-Amz-Signature=abcdef",
        );
        assert_eq!(
            global.analyse(None),
            call("s3", "eu-west-1", Some("s3:PutObject"), Some("arn:aws:s3:::orders/upload.bin"))
        );
        // A presigned listing is still a listing.
        let list = Request::new(
            "GET",
            "s3.eu-west-1.amazonaws.com",
            "/orders?list-type=2&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE/20260101/eu-west-1/s3/aws4_request&X-Amz-Signature=ab",
        );
        assert_eq!(
            list.analyse(None),
            call("s3", "eu-west-1", Some("s3:ListBucket"), Some("arn:aws:s3:::orders"))
        );
    }

    #[test]
    fn s3_anonymous_requests_fall_back_to_the_host() {
        let anonymous =
            Request::new("GET", "public-data.s3.eu-central-1.amazonaws.com", "/index.html");
        assert_eq!(
            anonymous.analyse(None),
            call(
                "s3",
                "eu-central-1",
                Some("s3:GetObject"),
                Some("arn:aws:s3:::public-data/index.html")
            )
        );
        let global = Request::new("GET", "s3.amazonaws.com", "/public-data/index.html");
        assert_eq!(
            global.analyse(None),
            call(
                "s3",
                "us-east-1",
                Some("s3:GetObject"),
                Some("arn:aws:s3:::public-data/index.html")
            )
        );
    }

    #[test]
    fn s3_bodies_are_never_peeked() {
        let put = Request::new("PUT", "orders.s3.us-west-2.amazonaws.com", "/form.txt")
            .signed("s3", "us-west-2")
            .form("Action=DeleteBucket");
        assert!(!wants_body(&put.method, &put.headers));
        let parts = RequestParts { body: Some(&put.body), ..put.parts() };
        assert_eq!(
            analyse(&parts, None),
            call("s3", "us-west-2", Some("s3:PutObject"), Some("arn:aws:s3:::orders/form.txt"))
        );
        let json = Request::new("PUT", "orders.s3.us-west-2.amazonaws.com", "/a.json")
            .body("application/json", r#"{"TableName": "x"}"#);
        assert!(!wants_body(&json.method, &json.headers));
    }

    // === Lambda and API Gateway ===

    #[test]
    fn lambda_functions() {
        let invoke = |path: &str| {
            Request::new("POST", "lambda.us-east-1.amazonaws.com", path)
                .signed("lambda", "us-east-1")
                .body("application/json", r#"{"order": 42}"#)
        };
        assert_eq!(
            invoke("/2015-03-31/functions/resize-image/invocations").analyse(Some(ACCOUNT)),
            call(
                "lambda",
                "us-east-1",
                Some("lambda:InvokeFunction"),
                Some("arn:aws:lambda:us-east-1:123456789012:function:resize-image")
            )
        );
        assert_eq!(
            invoke("/2015-03-31/functions/resize-image/invocations")
                .analyse(None)
                .resource
                .as_deref(),
            Some("arn:aws:lambda:us-east-1:*:function:resize-image")
        );
        // botocore percent-encodes the colons of ARNs and qualified names.
        assert_eq!(
            invoke("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A210987654321%3Afunction%3Aresize-image/invocations")
                .analyse(Some(ACCOUNT))
                .resource
                .as_deref(),
            Some("arn:aws:lambda:us-west-2:210987654321:function:resize-image")
        );
        assert_eq!(
            invoke("/2015-03-31/functions/210987654321%3Afunction%3Aresize-image/invocations")
                .analyse(Some(ACCOUNT))
                .resource
                .as_deref(),
            Some("arn:aws:lambda:us-east-1:210987654321:function:resize-image")
        );
        assert_eq!(
            invoke("/2015-03-31/functions/resize-image%3Aprod/invocations")
                .analyse(Some(ACCOUNT))
                .resource
                .as_deref(),
            Some("arn:aws:lambda:us-east-1:123456789012:function:resize-image:prod")
        );
        assert_eq!(
            invoke("/2015-03-31/functions/resize-image/invocations?Qualifier=%24LATEST")
                .analyse(Some(ACCOUNT))
                .resource
                .as_deref(),
            Some("arn:aws:lambda:us-east-1:123456789012:function:resize-image:$LATEST")
        );
        assert_eq!(
            invoke("/2021-11-15/functions/resize-image/response-streaming-invocations")
                .analyse(Some(ACCOUNT))
                .action
                .as_deref(),
            Some("lambda:InvokeFunction")
        );
        assert_eq!(invoke("/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3Ax%3Afunction%3Af/invocations").analyse(None).resource, None);

        let get = Request::new(
            "GET",
            "lambda.us-east-1.amazonaws.com",
            "/2015-03-31/functions/resize-image",
        )
        .signed("lambda", "us-east-1");
        assert_eq!(
            get.analyse(Some(ACCOUNT)),
            call(
                "lambda",
                "us-east-1",
                Some("lambda:GetFunction"),
                Some("arn:aws:lambda:us-east-1:123456789012:function:resize-image")
            )
        );
        let list = Request::new("GET", "lambda.us-east-1.amazonaws.com", "/2015-03-31/functions/")
            .signed("lambda", "us-east-1");
        assert_eq!(
            list.analyse(Some(ACCOUNT)),
            call("lambda", "us-east-1", Some("lambda:ListFunctions"), None)
        );
        let config = Request::new(
            "GET",
            "lambda.us-east-1.amazonaws.com",
            "/2015-03-31/functions/f/configuration",
        )
        .signed("lambda", "us-east-1");
        assert_eq!(config.analyse(None).action.as_deref(), Some("lambda:GetFunctionConfiguration"));
        let unknown = Request::new(
            "GET",
            "lambda.us-east-1.amazonaws.com",
            "/2015-03-31/event-source-mappings/",
        )
        .signed("lambda", "us-east-1");
        assert_eq!(unknown.analyse(None), call("lambda", "us-east-1", None, None));
    }

    #[test]
    fn api_gateway_invoke() {
        let request = Request::new(
            "GET",
            "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com",
            "/prod/orders/42",
        )
        .signed("execute-api", "eu-west-1");
        assert_eq!(
            request.analyse(Some(ACCOUNT)),
            call(
                "execute-api",
                "eu-west-1",
                Some("execute-api:Invoke"),
                Some("arn:aws:execute-api:eu-west-1:123456789012:a1b2c3d4e5/prod/GET/orders/42")
            )
        );
        let unsigned =
            Request::new("POST", "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "/prod");
        assert_eq!(
            unsigned.analyse(None),
            call(
                "execute-api",
                "eu-west-1",
                Some("execute-api:Invoke"),
                Some("arn:aws:execute-api:eu-west-1:*:a1b2c3d4e5/prod/POST/")
            )
        );
    }

    // === Endpoints, partitions, signatures ===

    #[test]
    fn partitions() {
        let china = Request::new("GET", "orders.s3.cn-north-1.amazonaws.com.cn", "/k")
            .signed("s3", "cn-north-1");
        assert_eq!(
            china.analyse(None),
            call("s3", "cn-north-1", Some("s3:GetObject"), Some("arn:aws-cn:s3:::orders/k"))
        );
        let china_table = Request::new("POST", "dynamodb.cn-northwest-1.amazonaws.com.cn", "/")
            .signed("dynamodb", "cn-northwest-1")
            .json("DynamoDB_20120810.GetItem", "1.0", r#"{"TableName": "orders"}"#);
        assert_eq!(
            china_table.analyse(Some(ACCOUNT)).resource.as_deref(),
            Some("arn:aws-cn:dynamodb:cn-northwest-1:123456789012:table/orders")
        );
        let gov_queue = Request::new("POST", "sqs.us-gov-west-1.amazonaws.com", "/").signed("sqs", "us-gov-west-1").json(
            "AmazonSQS.SendMessage",
            "1.0",
            r#"{"QueueUrl": "https://sqs.us-gov-west-1.amazonaws.com/123456789012/orders", "MessageBody": "x"}"#,
        );
        assert_eq!(
            gov_queue.analyse(None),
            call(
                "sqs",
                "us-gov-west-1",
                Some("sqs:SendMessage"),
                Some("arn:aws-us-gov:sqs:us-gov-west-1:123456789012:orders")
            )
        );
        let gov_bucket = Request::new("GET", "s3.us-gov-east-1.amazonaws.com", "/orders/k");
        assert_eq!(
            gov_bucket.analyse(None).resource.as_deref(),
            Some("arn:aws-us-gov:s3:::orders/k")
        );
        let gov_function = Request::new(
            "POST",
            "lambda.us-gov-west-1.amazonaws.com",
            "/2015-03-31/functions/f/invocations",
        )
        .signed("lambda", "us-gov-west-1");
        assert_eq!(
            gov_function.analyse(Some(ACCOUNT)).resource.as_deref(),
            Some("arn:aws-us-gov:lambda:us-gov-west-1:123456789012:function:f")
        );
    }

    #[test]
    fn endpoints_without_a_signature() {
        let cases: &[(&str, &str, &str)] = &[
            ("s3.amazonaws.com", "s3", "us-east-1"),
            ("bucket.s3.us-west-2.amazonaws.com", "s3", "us-west-2"),
            ("s3.dualstack.eu-west-1.amazonaws.com", "s3", "eu-west-1"),
            ("s3-us-west-2.amazonaws.com", "s3", "us-west-2"),
            ("s3-external-1.amazonaws.com", "s3", "us-east-1"),
            ("bucket.s3-website-us-east-1.amazonaws.com", "s3", "us-east-1"),
            ("bucket.s3-website.eu-west-1.amazonaws.com", "s3", "eu-west-1"),
            ("s3-fips.us-gov-west-1.amazonaws.com", "s3", "us-gov-west-1"),
            ("dynamodb.us-east-1.amazonaws.com", "dynamodb", "us-east-1"),
            ("dynamodb-fips.us-east-1.amazonaws.com", "dynamodb", "us-east-1"),
            ("streams.dynamodb.us-east-1.amazonaws.com", "dynamodb", "us-east-1"),
            ("sqs.eu-west-1.amazonaws.com", "sqs", "eu-west-1"),
            ("sqs.eu-west-1.amazonaws.com:443", "sqs", "eu-west-1"),
            ("queue.amazonaws.com", "sqs", "us-east-1"),
            ("sts.amazonaws.com", "sts", "us-east-1"),
            ("iam.amazonaws.com", "iam", "us-east-1"),
            ("iam.us-gov.amazonaws.com", "iam", "us-gov-west-1"),
            ("sts.cn-north-1.amazonaws.com.cn", "sts", "cn-north-1"),
            ("kms-fips.us-gov-west-1.amazonaws.com", "kms", "us-gov-west-1"),
            ("api.ecr.eu-west-1.amazonaws.com", "ecr", "eu-west-1"),
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "ecr", "eu-west-1"),
            ("runtime.sagemaker.eu-west-1.amazonaws.com", "sagemaker", "eu-west-1"),
            ("bedrock-runtime.us-west-2.amazonaws.com", "bedrock", "us-west-2"),
            ("data-ats.iot.us-east-1.amazonaws.com", "iotdata", "us-east-1"),
            ("ap-123456789012.s3-accesspoint.eu-west-1.amazonaws.com", "s3", "eu-west-1"),
            ("123456789012.s3-control.eu-west-1.amazonaws.com", "s3", "eu-west-1"),
            ("mfzwi23gnjvgw.mrap.accesspoint.s3-global.amazonaws.com", "s3", "us-east-1"),
            ("abc123.execute-api.ap-southeast-2.amazonaws.com", "execute-api", "ap-southeast-2"),
            ("monitoring.us-isob-east-1.amazonaws.com", "monitoring", "us-isob-east-1"),
        ];
        for &(host, service, region) in cases {
            let result = Request::new("GET", host, "/").analyse(None);
            assert_eq!(
                (result.service.as_deref(), result.region.as_deref()),
                (Some(service), Some(region)),
                "{host}"
            );
        }
        for host in [
            "example.com",
            "amazonaws.com",
            "us-east-1.amazonaws.com",
            "..amazonaws.com",
            "Ünicode.amazonaws.com",
            "",
            "[::1]:443",
            "S3_X.amazonaws.com",
        ] {
            assert_eq!(Request::new("GET", host, "/").analyse(None).service, None, "{host}");
        }
        // An unknown host still tells by the signature and the target.
        let local = Request::new("POST", "localhost:4566", "/")
            .signed("dynamodb", "us-east-1")
            .json("DynamoDB_20120810.GetItem", "1.0", r#"{"TableName": "t1"}"#);
        assert_eq!(
            local.analyse(None),
            call(
                "dynamodb",
                "us-east-1",
                Some("dynamodb:GetItem"),
                Some("arn:aws:dynamodb:us-east-1:*:table/t1")
            )
        );
        let unsigned_local =
            Request::new("POST", "localhost:4566", "/").json("AmazonSQS.ListQueues", "1.0", "{}");
        assert_eq!(
            unsigned_local.analyse(None),
            AwsCall {
                service: Some("sqs".into()),
                action: Some("sqs:ListQueues".into()),
                ..AwsCall::default()
            }
        );
    }

    #[test]
    fn the_signature_wins_over_the_host() {
        let request =
            Request::new("GET", "s3.amazonaws.com", "/orders/k").signed("s3", "ap-northeast-1");
        assert_eq!(request.analyse(None).region.as_deref(), Some("ap-northeast-1"));
        // A scope that is not one is ignored.
        let garbage = Request::new("GET", "orders.s3.eu-west-1.amazonaws.com", "/k").header(
            "authorization",
            &format!(
                "AWS4-HMAC-SHA256 Credential={AKID}/20260101/EU WEST/S3/aws4_request, Signature=x"
            ),
        );
        assert_eq!(
            garbage.analyse(None),
            call("s3", "eu-west-1", Some("s3:GetObject"), Some("arn:aws:s3:::orders/k"))
        );
        // SigV2 has no scope.
        let v2 = Request::new("GET", "orders.s3.eu-west-1.amazonaws.com", "/k")
            .header("authorization", &format!("AWS {AKID}:frJIUN8DYpKDtOLCwo//yllqDzg="));
        assert_eq!(v2.analyse(None).region.as_deref(), Some("eu-west-1"));
    }

    #[test]
    fn sigv4a() {
        let request = Request::new("GET", "mrap-alias.accesspoint.s3-global.amazonaws.com", "/k").header("x-amz-region-set", "eu-west-1").header(
            "authorization",
            &format!("AWS4-ECDSA-P256-SHA256 Credential={AKID}/20260101/s3/aws4_request, SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=3045022100"),
        );
        let result = request.analyse(None);
        assert_eq!(
            (result.service.as_deref(), result.region.as_deref()),
            (Some("s3"), Some("eu-west-1"))
        );
        let any_region = Request::new("POST", "events.us-east-1.amazonaws.com", "/")
            .header("x-amz-region-set", "*")
            .header("authorization", &format!("AWS4-ECDSA-P256-SHA256 Credential={AKID}/20260101/events/aws4_request, SignedHeaders=host, Signature=3045"))
            .json("AWSEvents.PutEvents", "1.1", r#"{"Entries": [{"EventBusName": "arn:aws:events:us-east-1:123456789012:event-bus/orders"}]}"#);
        assert_eq!(
            any_region.analyse(None),
            call(
                "events",
                "us-east-1",
                Some("events:PutEvents"),
                Some("arn:aws:events:us-east-1:123456789012:event-bus/orders")
            )
        );
    }

    // === Body peeking ===

    #[test]
    fn which_bodies_are_peeked() {
        let peeks = |request: &Request| wants_body(&request.method, &request.headers);
        assert!(peeks(
            &Request::new("POST", "sts.amazonaws.com", "/")
                .signed("sts", "us-east-1")
                .form("Action=GetCallerIdentity&Version=2011-06-15")
        ));
        assert!(peeks(
            &Request::new("POST", "ec2.us-east-1.amazonaws.com", "/")
                .signed("ec2", "us-east-1")
                .form("Action=DescribeVpcs")
        ));
        assert!(peeks(
            &Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
                .signed("dynamodb", "us-east-1")
                .json("DynamoDB_20120810.GetItem", "1.0", "{}")
        ));
        assert!(peeks(&Request::new("POST", "x", "/").json(
            "DynamoDB_20120810.GetItem",
            "1.0",
            "{}"
        )));
        assert!(peeks(
            &Request::new("POST", "x", "/")
                .header("x-amz-target", "secretsmanager.GetSecretValue")
                .body("application/json", "{}")
        ));
        assert!(peeks(
            &Request::new("POST", "kms.us-east-1.amazonaws.com", "/")
                .body("application/json; charset=utf-8", "{}")
        ));
        // The resource is in the path, the body is the payload.
        assert!(!peeks(
            &Request::new(
                "POST",
                "lambda.us-east-1.amazonaws.com",
                "/2015-03-31/functions/f/invocations"
            )
            .signed("lambda", "us-east-1")
            .body("application/json", "{}")
        ));
        assert!(!peeks(
            &Request::new("POST", "ecs.us-east-1.amazonaws.com", "/")
                .signed("ecs", "us-east-1")
                .json("AmazonEC2ContainerServiceV20141113.ListTasks", "1.1", "{}")
        ));
        assert!(!peeks(&Request::new("POST", "x", "/").body("application/json", "{}")));
        assert!(!peeks(
            &Request::new("POST", "x", "/").body("application/octet-stream", "Action=x")
        ));
        assert!(!peeks(
            &Request::new("GET", "sts.amazonaws.com", "/").form("Action=GetCallerIdentity")
        ));
        let big = Request::new("POST", "sts.amazonaws.com", "/")
            .form("Action=GetCallerIdentity")
            .header("content-length", &(MAX_BODY_PEEK + 1).to_string());
        assert!(!peeks(&big));
        let chunked = Request::new("POST", "sts.amazonaws.com", "/")
            .header("content-type", "application/x-www-form-urlencoded");
        assert!(!peeks(&chunked));
        assert!(!peeks(
            &Request::new("POST", "sts.amazonaws.com", "/").form("").header("content-length", "0")
        ));
        assert!(!peeks(
            &Request::new("POST", "sts.amazonaws.com", "/")
                .form("Action=x")
                .header("content-length", "-1")
        ));
    }

    #[test]
    fn bodies_without_a_content_type_are_sniffed() {
        let mut request = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
            .signed("dynamodb", "us-east-1")
            .header("x-amz-target", "DynamoDB_20120810.GetItem");
        request.body = br#" {"TableName": "orders"}"#.to_vec();
        let parts = RequestParts { body: Some(&request.body), ..request.parts() };
        assert_eq!(
            analyse(&parts, None).resource.as_deref(),
            Some("arn:aws:dynamodb:us-east-1:*:table/orders")
        );
        let form = b"Action=GetCallerIdentity&Version=2011-06-15".to_vec();
        let sts = Request::new("POST", "sts.amazonaws.com", "/").signed("sts", "us-east-1");
        let parts = RequestParts { body: Some(&form), ..sts.parts() };
        assert_eq!(analyse(&parts, None).action.as_deref(), Some("sts:GetCallerIdentity"));
    }

    // === Secrets and robustness ===

    #[test]
    fn no_secret_in_debug_output() {
        let requests = [
            Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/").signed("dynamodb", "us-east-1").json(
                "DynamoDB_20120810.PutItem",
                "1.0",
                r#"{"TableName": "orders", "Item": {"card": {"S": "4111111111111111"}}}"#,
            ),
            Request::new(
                "GET",
                "orders.s3.us-west-2.amazonaws.com",
                &format!(
                    "/k?X-Amz-Credential={AKID}%2F20260101%2Fus-west-2%2Fs3%2Faws4_request&X-Amz-Signature={SIGNATURE}&X-Amz-Security-Token={SESSION_TOKEN}"
                ),
            ),
            Request::new("POST", "sts.amazonaws.com", "/").signed("sts", "us-east-1").form("Action=GetCallerIdentity&Version=2011-06-15"),
            // A credential scope that is all access key id.
            Request::new("GET", "s3.amazonaws.com", "/")
                .header("authorization", &format!("AWS4-HMAC-SHA256 Credential={AKID}/{AKID}/{AKID}/{AKID}/aws4_request")),
            Request::new("GET", "s3.amazonaws.com", "/")
                .header("authorization", &format!("AWS4-HMAC-SHA256 Credential={AKID}/20260101/us-east-1/{}/aws4_request", AKID.to_lowercase())),
        ];
        for request in &requests {
            let parts = RequestParts { body: Some(&request.body), ..request.parts() };
            for debug in [
                format!("{:?}", analyse(&parts, Some(ACCOUNT))),
                format!("{parts:?}"),
                format!("{:#?}", analyse(&parts, None)),
            ] {
                for secret in [AKID, SIGNATURE, SESSION_TOKEN, "4111111111111111"] {
                    assert!(
                        !debug.to_ascii_uppercase().contains(&secret.to_ascii_uppercase()),
                        "{secret} in {debug}"
                    );
                }
            }
        }
    }

    #[test]
    fn malformed_requests_give_what_can_be_told() {
        let dynamodb = |body: &[u8]| {
            let request = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
                .signed("dynamodb", "us-east-1")
                .json("DynamoDB_20120810.GetItem", "1.0", "");
            let parts = RequestParts { body: Some(body), ..request.parts() };
            analyse(&parts, None)
        };
        let no_resource = call("dynamodb", "us-east-1", Some("dynamodb:GetItem"), None);
        for body in [
            &b"[1, 2]"[..],
            b"\"orders\"",
            b"{\"TableName\": 42}",
            b"{\"TableName\": \"a/b\"}",
            b"{\"TableName\": \"bad\\nname\"}",
            b"{\"TableName\"",
            b"\xff\xfe",
            b"",
        ] {
            assert_eq!(dynamodb(body), no_resource, "{}", String::from_utf8_lossy(body));
        }
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(dynamodb(deep.as_bytes()), no_resource);
        let huge_name = format!(r#"{{"TableName": "{}"}}"#, "t".repeat(MAX_BODY_PEEK));
        assert_eq!(dynamodb(huge_name.as_bytes()), no_resource);
        let bad_target = Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/")
            .signed("dynamodb", "us-east-1")
            .json("DynamoDB_20120810.Get Item", "1.0", "{}");
        assert_eq!(bad_target.analyse(None), call("dynamodb", "us-east-1", None, None));

        let sqs = |url: &str| {
            Request::new("POST", "sqs.us-east-1.amazonaws.com", "/")
                .signed("sqs", "us-east-1")
                .form(&format!("Action=SendMessage&QueueUrl={url}"))
                .analyse(None)
                .resource
        };
        assert_eq!(sqs("https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123%2Forders"), None);
        assert_eq!(
            sqs("https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Forders%2Fextra"),
            None
        );
        assert_eq!(
            sqs("https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Ford%0Aers"),
            None
        );
        assert_eq!(sqs("%ZZ%2"), None);
        assert_eq!(
            sqs("http://localhost:4566/000000000000/orders").as_deref(),
            Some("arn:aws:sqs:us-east-1:000000000000:orders")
        );

        let sns = Request::new("POST", "sns.us-east-1.amazonaws.com", "/")
            .signed("sns", "us-east-1")
            .form("Action=Publish&TopicArn=not-an-arn%0A&Message=x");
        assert_eq!(sns.analyse(None), call("sns", "us-east-1", Some("sns:Publish"), None));
        let bad_path = Request::new("GET", "s3.us-west-2.amazonaws.com", "/%ZZbucket/%E2%82")
            .signed("s3", "us-west-2");
        assert_eq!(bad_path.analyse(None), call("s3", "us-west-2", Some("s3:GetObject"), None));
    }

    /// xorshift64*: a fixed seed, the same inputs on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % u64::try_from(n).expect("n")).expect("index")
        }

        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }

        /// Bytes made of pieces that mean something to the parser, and noise.
        fn bytes(&mut self, max_pieces: usize) -> Vec<u8> {
            const PIECES: &[&[u8]] = &[
                b"%",
                b"%2F",
                b"%3A",
                b"%ZZ",
                b"%F",
                b"%FF",
                b"%00",
                b"/",
                b"?",
                b"=",
                b"&",
                b":",
                b".",
                b"-",
                b"+",
                b" ",
                b"{",
                b"}",
                b"[",
                b"]",
                b"\"",
                b",",
                b"arn:",
                b"aws:",
                b"aws4_request",
                b"AWS4-HMAC-SHA256 ",
                b"Credential=",
                b"s3",
                b"sqs",
                b"dynamodb",
                b"lambda",
                b"us-east-1",
                b"cn-north-1",
                b"amazonaws.com",
                b".amazonaws.com.cn",
                b"s3-accesspoint",
                b"execute-api",
                b"123456789012",
                b"Action=",
                b"TableName",
                b"QueueUrl",
                b"KeyId",
                b"\"TableName\": ",
                b"RequestItems",
                b"TransactItems",
                b"2015-03-31",
                b"functions",
                b"invocations",
                b"uploadId",
                b"versionId",
                b"delete",
                b"\xff",
                b"\xc3\xa9",
                b"\xe2\x82",
                b"\0",
                b"\n",
                b"\t",
                b"\x7f",
            ];
            let mut out = Vec::new();
            for _ in 0..self.below(max_pieces + 1) {
                if self.below(4) == 0 {
                    out.push(u8::try_from(self.below(256)).expect("byte"));
                } else {
                    out.extend_from_slice(self.pick(PIECES));
                }
            }
            out
        }
    }

    fn assert_sane(result: &AwsCall, input: &str) {
        for value in [&result.service, &result.region, &result.action, &result.resource]
            .into_iter()
            .flatten()
        {
            assert!(!value.is_empty() && value.len() <= MAX_ARN_LEN, "{value:?} from {input}");
            assert!(!value.chars().any(char::is_control), "{value:?} from {input}");
            assert!(!value.to_ascii_uppercase().contains(AKID), "{value:?} from {input}");
        }
        if let Some(resource) = &result.resource {
            assert!(resource.starts_with("arn:"), "{resource} from {input}");
        }
        if let Some(action) = &result.action {
            let (prefix, operation) = action.split_once(':').expect("prefix:Operation");
            assert!(
                is_service_name(prefix) && is_operation_name(operation),
                "{action} from {input}"
            );
        }
    }

    #[test]
    fn random_inputs_never_panic() {
        const METHODS: &[&str] =
            &["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS", "FOO"];
        const HEADERS: &[&str] = &[
            "authorization",
            "x-amz-target",
            "content-type",
            "content-length",
            "host",
            "x-amz-region-set",
            "x-amz-copy-source",
        ];
        const HOSTS: &[&str] = &[
            "s3.amazonaws.com",
            "orders.s3.us-west-2.amazonaws.com",
            "dynamodb.us-east-1.amazonaws.com",
            "lambda.eu-west-1.amazonaws.com",
            "ap-123456789012.s3-accesspoint.us-east-1.amazonaws.com",
            "abc.execute-api.us-east-1.amazonaws.com",
            "sqs.cn-north-1.amazonaws.com.cn",
            "kms.us-gov-west-1.amazonaws.com",
            "secretsmanager.us-east-1.amazonaws.com",
            "sns.us-east-1.amazonaws.com",
        ];
        let mut rng = Rng(0x5eed_1234_abcd_ef01);
        for round in 0..20_000 {
            let method = Method::from_bytes(rng.pick(METHODS).as_bytes()).expect("method");
            let host = if rng.below(2) == 0 {
                rng.pick(HOSTS).to_owned()
            } else {
                String::from_utf8_lossy(&rng.bytes(8)).into_owned()
            };
            let path = String::from_utf8_lossy(&rng.bytes(12)).into_owned();
            let query =
                (rng.below(2) == 0).then(|| String::from_utf8_lossy(&rng.bytes(12)).into_owned());
            let mut headers = HeaderMap::new();
            for _ in 0..rng.below(6) {
                let name = HeaderName::from_static(rng.pick(HEADERS));
                if let Ok(value) = HeaderValue::from_bytes(&rng.bytes(10)) {
                    headers.insert(name, value);
                }
            }
            // The access key id only ever where credentials go; it must not come out.
            let scope = [AKID.as_bytes(), b"/", &rng.bytes(6)].concat();
            if let Ok(value) = HeaderValue::from_bytes(
                &[b"AWS4-HMAC-SHA256 Credential=".as_slice(), &scope].concat(),
            ) {
                if rng.below(2) == 0 {
                    headers.insert(http::header::AUTHORIZATION, value);
                }
            }
            let query = query.map(|q| {
                if rng.below(2) == 0 {
                    format!("X-Amz-Credential={}&{q}", String::from_utf8_lossy(&scope))
                } else {
                    q
                }
            });
            let body = rng.bytes(16);
            let parts = RequestParts {
                method: &method,
                host: &host,
                path: &path,
                query: query.as_deref(),
                headers: &headers,
                body: (rng.below(4) != 0).then_some(body.as_slice()),
            };
            let _ = wants_body(&method, &headers);
            assert_sane(&analyse(&parts, Some(ACCOUNT)), &format!("round {round}: {parts:?}"));
        }
    }

    #[test]
    fn mutated_real_requests_never_panic() {
        let bases = [
            Request::new("POST", "dynamodb.us-east-1.amazonaws.com", "/").signed("dynamodb", "us-east-1").json(
                "DynamoDB_20120810.TransactWriteItems",
                "1.0",
                r#"{"TransactItems": [{"Put": {"TableName": "orders"}}], "RequestItems": {"a": []}}"#,
            ),
            Request::new("POST", "sqs.us-east-1.amazonaws.com", "/")
                .signed("sqs", "us-east-1")
                .form("Action=SendMessage&QueueUrl=https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Forders&MessageBody=x"),
            Request::new(
                "POST",
                "lambda.us-east-1.amazonaws.com",
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-west-2%3A123456789012%3Afunction%3Af%3Aprod/invocations?Qualifier=1",
            ),
            Request::new(
                "PUT",
                "orders.s3.us-west-2.amazonaws.com",
                "/big.bin?partNumber=2&uploadId=VXBsb2FkSUQ&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20260101%2Fus-west-2%2Fs3%2Faws4_request",
            ),
            Request::new("POST", "kms.us-east-1.amazonaws.com", "/").signed("kms", "us-east-1").json(
                "TrentService.Encrypt",
                "1.1",
                r#"{"KeyId": "alias/orders"}"#,
            ),
            Request::new("GET", "a1.execute-api.eu-west-1.amazonaws.com", "/prod/orders/42"),
        ];
        let mut rng = Rng(0xfeed_beef_0bad_cafe);
        let mutate = |rng: &mut Rng, input: &[u8]| {
            let mut out = input.to_vec();
            for _ in 0..=rng.below(3) {
                let at = rng.below(out.len() + 1);
                match rng.below(3) {
                    0 if at < out.len() => out[at] = u8::try_from(rng.below(256)).expect("byte"),
                    1 if at < out.len() => drop(out.remove(at)),
                    _ => {
                        let piece = rng.bytes(2);
                        out.splice(at..at, piece);
                    }
                }
            }
            out
        };
        for round in 0..20_000 {
            let base = &bases[rng.below(bases.len())];
            let host =
                String::from_utf8_lossy(&mutate(&mut rng, base.host.as_bytes())).into_owned();
            let path =
                String::from_utf8_lossy(&mutate(&mut rng, base.path.as_bytes())).into_owned();
            let query = base
                .query
                .as_ref()
                .map(|q| String::from_utf8_lossy(&mutate(&mut rng, q.as_bytes())).into_owned());
            let body = mutate(&mut rng, &base.body);
            let mut headers = base.headers.clone();
            let name = HeaderName::from_static(rng.pick(&[
                "authorization",
                "x-amz-target",
                "content-type",
            ]));
            if let Some(value) = headers
                .get(&name)
                .map(|v| mutate(&mut rng, v.as_bytes()))
                .and_then(|v| HeaderValue::from_bytes(&v).ok())
            {
                headers.insert(name, value);
            }
            let parts = RequestParts {
                method: &base.method,
                host: &host,
                path: &path,
                query: query.as_deref(),
                headers: &headers,
                body: Some(&body),
            };
            assert_sane(&analyse(&parts, None), &format!("round {round}: {parts:?}"));
        }
    }
}
