//! S3: the REST API, by method, path and query, as IAM actions on buckets and objects.

use super::endpoint::{Arns, Endpoint};
use super::names::{is_account_id, is_bucket_name, percent_decode, percent_decode_str};
use super::{RequestParts, MAX_VALUE_LEN};

#[cfg(test)]
mod tests;

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
    ("metrics", "GetMetricsConfiguration", "PutMetricsConfiguration", "PutMetricsConfiguration"),
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
        (true, Some(Container::AccessPoint { name: name.clone(), account: account.clone() }), path)
    } else if let Some(bucket) = &endpoint.bucket {
        (true, Some(Container::Bucket(bucket.clone())), path)
    } else {
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let container =
            percent_decode_str(bucket, false).filter(|b| is_bucket_name(b)).map(Container::Bucket);
        (!bucket.is_empty(), container, key)
    };
    let has_key = !key.is_empty();
    let query = Query::parse(req.query);
    let Some((action, applies)) = action(req.method.as_str(), has_bucket, has_key, &query) else {
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
            ("POST", _) if query.has("delete") => return Some(("DeleteObject", Applies::Objects)),
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
        Container::AccessPoint { name, account } if is_account_id(account) => {
            Some(format!("arn:{}:s3:{}:{account}:accesspoint/{name}", arns.partition, arns.region))
        }
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
