//! AWS visibility: which workload calls which AWS service, action and resource.
//!
//! One binary, three roles (`aws-proxy proxy`, `aws-proxy webhook`, `aws-proxy dns`, or `all`):
//! - [`proxy`]: terminates TLS for AWS host names with leaf certificates from its own [`ca`],
//!   reads the SigV4 credential scope and the operation ([`analyse`]), forwards over verified TLS
//!   to the real endpoint and reports the call to the mapper.
//! - [`webhook`]: a mutating admission webhook that opts labelled pods in (CA bundle, DNS).
//! - [`dns`]: answers `amazonaws.com` names with the proxy's address, forwards the rest.

pub mod analyse;
pub mod ca;
pub mod cli;
pub mod dns;
pub mod proxy;
pub mod webhook;

/// Whether `host` (optionally with `:port` and a trailing dot, any case) is `amazonaws.com`,
/// `amazonaws.com.cn` or a name under either.
pub fn is_aws_host(host: &str) -> bool {
    let host = strip_port(host).trim_end_matches('.');
    ["amazonaws.com", "amazonaws.com.cn"].iter().any(|zone| {
        host.len() >= zone.len()
            && host[host.len() - zone.len()..].eq_ignore_ascii_case(zone)
            && (host.len() == zone.len() || host.as_bytes()[host.len() - zone.len() - 1] == b'.')
    })
}

/// `host:port` → `host`; `[v6]:port` → `v6`; anything else unchanged.
pub fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_hosts() {
        for host in [
            "amazonaws.com",
            "s3.amazonaws.com",
            "S3.US-EAST-1.AmazonAWS.com.",
            "sqs.cn-north-1.amazonaws.com.cn",
            "s3.amazonaws.com:443",
        ] {
            assert!(is_aws_host(host), "{host}");
        }
        for host in [
            "notamazonaws.com",
            "amazonaws.com.evil.org",
            "example.com",
            "amazonaws.co",
            "",
            "[::1]:443",
        ] {
            assert!(!is_aws_host(host), "{host}");
        }
        assert_eq!(strip_port("[::1]:443"), "::1");
        assert_eq!(strip_port("a.b:8443"), "a.b");
        assert_eq!(strip_port("::1"), "::1");
    }
}
