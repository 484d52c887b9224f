//! Signature and endpoint: what the SigV4 credential scope, the host name and `X-Amz-Target` say,
//! and the parts of an ARN the request does not tell itself.

use super::names::{
    clean, form_value, header_str, is_access_point_name, is_account_id, is_bucket_name,
    is_operation_name, is_region, is_service_name, token,
};
use super::{RequestParts, MAX_ARN_LEN};

/// What the SigV4 credential scope (`AKID/20260101/us-east-1/s3/aws4_request`) says, the access key id left behind.
#[derive(Default)]
pub(super) struct Scope {
    pub(super) service: Option<String>,
    pub(super) region: Option<String>,
}

impl Scope {
    pub(super) fn of_request(req: &RequestParts<'_>) -> Scope {
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
    pub(super) fn from_authorization(value: &str) -> Option<Scope> {
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
pub(super) struct Endpoint {
    /// The SigV4 signing name.
    pub(super) service: Option<String>,
    pub(super) region: Option<String>,
    /// Under `amazonaws.com.cn`.
    pub(super) china: bool,
    /// S3 virtual-hosted style: the labels before `s3`.
    pub(super) bucket: Option<String>,
    /// S3 access point `{name}-{account}.s3-accesspoint.{region}.amazonaws.com`: (name, account).
    pub(super) access_point: Option<(String, String)>,
    /// API Gateway `{api id}.execute-api.{region}.amazonaws.com`.
    pub(super) api_id: Option<String>,
    /// S3 Control (`{account}.s3-control.{region}.amazonaws.com`): signed as `s3`, not the object API.
    pub(super) s3_control: bool,
}

impl Endpoint {
    pub(super) fn parse(host: &str) -> Endpoint {
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
pub(super) struct Target {
    pub(super) operation: String,
    /// The signing name the target prefix belongs to, for requests that say nothing else.
    pub(super) service: Option<&'static str>,
}

impl Target {
    pub(super) fn parse(value: &str) -> Option<Target> {
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
pub(super) fn iam_prefix(service: &str) -> &str {
    match service {
        "monitoring" => "cloudwatch",
        "email" => "ses",
        "iotdata" => "iot",
        "tagging" => "tag",
        other => other,
    }
}

pub(super) fn partition(region: Option<&str>, china_host: bool) -> &'static str {
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
pub(super) struct Arns<'a> {
    pub(super) partition: &'a str,
    /// A region or `*`.
    pub(super) region: &'a str,
    /// An account id or `*`.
    pub(super) account: &'a str,
}

impl Arns<'_> {
    pub(super) fn arn(&self, service: &str, resource: &str) -> Option<String> {
        let resource = clean(resource)?;
        let arn =
            format!("arn:{}:{service}:{}:{}:{resource}", self.partition, self.region, self.account);
        (arn.len() <= MAX_ARN_LEN).then_some(arn)
    }
}

#[cfg(test)]
mod tests {
    use crate::analyse::test_support::*;

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
}
