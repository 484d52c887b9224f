//! STS, SNS and the Query protocol; the AWS JSON protocol; API Gateway.

use crate::analyse::test_support::*;

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
    assert_eq!(get_url.analyse(None).resource.as_deref(), Some("arn:aws:sqs:eu-west-1:*:orders"));
    let other_owner =
        Request::new("POST", "sqs.eu-west-1.amazonaws.com", "/").signed("sqs", "eu-west-1").json(
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
    let to_queue = Request::new("POST", "us-west-2.queue.amazonaws.com", "/123456789012/orders")
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
    let decrypt =
        |body: &str| {
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
    let logs =
        Request::new("POST", "logs.us-east-1.amazonaws.com", "/").signed("logs", "us-east-1").json(
            "Logs_20140328.PutLogEvents",
            "1.1",
            r#"{"logGroupName": "/aws/eks/orders", "logStreamName": "pod-1", "logEvents": []}"#,
        );
    assert_eq!(
        logs.analyse(Some(ACCOUNT)),
        call(
            "logs",
            "us-east-1",
            Some("logs:PutLogEvents"),
            Some("arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/orders:log-stream:pod-1")
        )
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
    let ssm =
        Request::new("POST", "ssm.us-east-1.amazonaws.com", "/").signed("ssm", "us-east-1").json(
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
    let states = Request::new("POST", "states.us-east-1.amazonaws.com", "/")
        .signed("states", "us-east-1")
        .json(
            "AWSStepFunctions.StartExecution",
            "1.0",
            r#"{"stateMachineArn": "arn:aws:states:us-east-1:123456789012:stateMachine:orders"}"#,
        );
    assert_eq!(
        states.analyse(None).resource.as_deref(),
        Some("arn:aws:states:us-east-1:123456789012:stateMachine:orders")
    );
}

// === API Gateway ===

#[test]
fn api_gateway_invoke() {
    let request =
        Request::new("GET", "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "/prod/orders/42")
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
    let unsigned = Request::new("POST", "a1b2c3d4e5.execute-api.eu-west-1.amazonaws.com", "/prod");
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
