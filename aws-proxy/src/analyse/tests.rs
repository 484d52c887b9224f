//! Body peeking, and what no request may do: leak a secret, panic, or give a malformed answer.

use super::names::{is_operation_name, is_service_name};
use super::test_support::*;
use super::MAX_ARN_LEN;

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
    assert!(peeks(&Request::new("POST", "x", "/").json("DynamoDB_20120810.GetItem", "1.0", "{}")));
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
        &Request::new("POST", "ecs.us-east-1.amazonaws.com", "/").signed("ecs", "us-east-1").json(
            "AmazonEC2ContainerServiceV20141113.ListTasks",
            "1.1",
            "{}"
        )
    ));
    assert!(!peeks(&Request::new("POST", "x", "/").body("application/json", "{}")));
    assert!(!peeks(&Request::new("POST", "x", "/").body("application/octet-stream", "Action=x")));
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
    assert_eq!(sqs("https%3A%2F%2Fsqs.us-east-1.amazonaws.com%2F123456789012%2Ford%0Aers"), None);
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
    for value in
        [&result.service, &result.region, &result.action, &result.resource].into_iter().flatten()
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
        assert!(is_service_name(prefix) && is_operation_name(operation), "{action} from {input}");
    }
}

#[test]
fn random_inputs_never_panic() {
    const METHODS: &[&str] = &["GET", "PUT", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS", "FOO"];
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
        if let Ok(value) =
            HeaderValue::from_bytes(&[b"AWS4-HMAC-SHA256 Credential=".as_slice(), &scope].concat())
        {
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
        let host = String::from_utf8_lossy(&mutate(&mut rng, base.host.as_bytes())).into_owned();
        let path = String::from_utf8_lossy(&mutate(&mut rng, base.path.as_bytes())).into_owned();
        let query = base
            .query
            .as_ref()
            .map(|q| String::from_utf8_lossy(&mutate(&mut rng, q.as_bytes())).into_owned());
        let body = mutate(&mut rng, &base.body);
        let mut headers = base.headers.clone();
        let name =
            HeaderName::from_static(rng.pick(&["authorization", "x-amz-target", "content-type"]));
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
