//! S3 requests as the SDKs send them.

use crate::analyse::test_support::*;

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
    ("GET", "orders.s3.us-west-2.amazonaws.com", "/bad%0Akey", None, Some("s3:GetObject"), None),
    ("GET", "orders.s3.us-west-2.amazonaws.com", "/bad%FFkey", None, Some("s3:GetObject"), None),
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
    let too_long = Request::new("GET", "orders.s3.us-west-2.amazonaws.com", &format!("/{long}k"))
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
    let anonymous = Request::new("GET", "public-data.s3.eu-central-1.amazonaws.com", "/index.html");
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
        call("s3", "us-east-1", Some("s3:GetObject"), Some("arn:aws:s3:::public-data/index.html"))
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
