//! The RPC protocols (JSON with `X-Amz-Target`, Query with `Action=`, Smithy RPCv2), the
//! resources their requests name, and API Gateway's `execute-api:Invoke`.

use http::HeaderMap;
use serde_json::{Map, Value};

use super::endpoint::{partition, Arns, Endpoint, Target};
use super::names::{
    arn_value, form_value, header_str, is_account_id, is_operation_name, percent_decode_str, token,
};
use super::{RequestParts, MAX_BODY_PEEK, MAX_VALUE_LEN};

#[cfg(test)]
mod tests;

pub(super) fn rpc(
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
pub(super) fn execute_api_resource(
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
pub(super) enum BodyKind {
    Form,
    /// `application/x-amz-json-1.0` / `1.1`: the AWS JSON protocol.
    AmzJson,
    Json,
}

pub(super) fn body_kind(headers: &HeaderMap) -> Option<BodyKind> {
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
