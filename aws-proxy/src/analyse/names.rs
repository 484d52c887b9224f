//! Names and encodings: what a region, service, account, bucket or ARN looks like, and decoding
//! forms and query strings.

use http::HeaderMap;

use super::MAX_ARN_LEN;

pub(super) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `us-isob-east-1`, ...
pub(super) fn is_region(value: &str) -> bool {
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
pub(super) fn is_service_name(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// An API operation name: `GetItem`, `SendMessage`.
pub(super) fn is_operation_name(value: &str) -> bool {
    (1..=128).contains(&value.len())
        && value.starts_with(|c: char| c.is_ascii_alphabetic())
        && value.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(super) fn is_account_id(value: &str) -> bool {
    value.len() == 12 && value.bytes().all(|b| b.is_ascii_digit())
}

/// Bucket names, including the legacy ones of us-east-1 (capitals, underscores, up to 255).
pub(super) fn is_bucket_name(value: &str) -> bool {
    token(value, 255, ".-_").is_some()
}

pub(super) fn is_access_point_name(value: &str) -> bool {
    token(value, 50, "-").is_some()
}

/// `value` when it is 1..=`max` bytes of ASCII letters, digits and the bytes of `extra`.
pub(super) fn token<'v>(value: &'v str, max: usize, extra: &str) -> Option<&'v str> {
    (!value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || extra.as_bytes().contains(&b)))
    .then_some(value)
}

/// `value` when it is fit to be part of an ARN: not empty, not too long, no control characters.
pub(super) fn clean(value: &str) -> Option<&str> {
    (!value.is_empty() && value.len() <= MAX_ARN_LEN && !value.chars().any(char::is_control))
        .then_some(value)
}

/// An ARN given in the request (`TopicArn`, `SecretId`, ...), when it looks like one.
pub(super) fn arn_value(value: &str) -> Option<String> {
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
pub(super) fn form_value(data: &[u8], name: &str) -> Option<String> {
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

pub(super) fn percent_decode_str(value: &str, plus_is_space: bool) -> Option<String> {
    String::from_utf8(percent_decode(value.as_bytes(), plus_is_space)).ok()
}

/// Decodes `%XX` escapes (and `+` in forms); a bad escape stays as it is.
pub(super) fn percent_decode(input: &[u8], plus_is_space: bool) -> Vec<u8> {
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
