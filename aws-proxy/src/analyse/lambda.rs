//! Lambda: the REST paths of its API, as IAM actions on functions.

use super::endpoint::{partition, Arns};
use super::names::{form_value, is_account_id, is_region, percent_decode_str, token};
use super::RequestParts;

/// The REST paths of the Lambda API (`/2015-03-31/functions/{name}/invocations`), as IAM actions.
pub(super) fn analyse(req: &RequestParts<'_>, arns: &Arns<'_>) -> (Option<String>, Option<String>) {
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
            (Arns { partition: partition_name, region, account }, *function, rest.first().copied())
        }
        [account, "function", function, rest @ ..] if rest.len() <= 1 && is_account_id(account) => {
            (Arns { account, ..*arns }, *function, rest.first().copied())
        }
        [function] => (*arns, *function, None),
        [function, qualifier] => (*arns, *function, Some(*qualifier)),
        _ => return None,
    };
    let function = token(function, 140, "_-")?;
    match own_qualifier.or(qualifier) {
        Some(qualifier) => {
            arns.arn("lambda", &format!("function:{function}:{}", token(qualifier, 128, "$_-")?))
        }
        None => arns.arn("lambda", &format!("function:{function}")),
    }
}

#[cfg(test)]
mod tests {
    use crate::analyse::test_support::*;

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
}
