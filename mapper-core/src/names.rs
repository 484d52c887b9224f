//! The shapes `model::EdgeReport` validation accepts, checked before a name enters an edge, so
//! that one odd annotation or DNS answer can never make a whole report unacceptable.

use std::collections::HashSet;
use std::sync::Arc;

/// A Kubernetes object name (DNS-1123 subdomain), as the report requires for namespaces and names.
pub(crate) fn is_kubernetes_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub(crate) fn is_kind(kind: &str) -> bool {
    !kind.is_empty() && kind.len() <= 63 && kind.bytes().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) fn is_dns_name(name: &str) -> bool {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_' || c == b'*')
        })
}

pub(crate) fn is_arn(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.split(':').count() >= 6
}

pub(crate) fn is_iam_action(action: &str) -> bool {
    action.contains(':')
        && action.len() <= 256
        && action
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b':' | b'*' | b'-' | b'_'))
}

/// A DNS name as compared here: lowercase, without the trailing dot.
pub(crate) fn normalize_dns_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// Shares the strings the index and the DNS memory hold many copies of (namespaces, kinds,
/// owner names, label keys and values, domains). Strings nobody holds any more are dropped
/// whenever the set has doubled since the last sweep, so churn does not grow it for ever.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    strings: HashSet<Arc<str>>,
    sweep_at: usize,
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        if self.strings.len() >= self.sweep_at {
            self.sweep();
        }
        let shared: Arc<str> = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    pub(crate) fn sweep(&mut self) {
        self.strings.retain(|s| Arc::strong_count(s) > 1);
        self.sweep_at = (self.strings.len() * 2).max(1024);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_report_rules() {
        assert!(is_kubernetes_name("cartservice"));
        assert!(is_kubernetes_name("ip-10-0-0-1.ec2.internal"));
        assert!(!is_kubernetes_name("Cart Service"));
        assert!(!is_kubernetes_name(""));
        assert!(!is_kubernetes_name("-cart"));
        assert!(is_kind("Rollout"));
        assert!(!is_kind("apps/v1"));
        assert!(is_dns_name("api.stripe.com."));
        assert!(!is_dns_name("a..b"));
        assert!(is_arn("arn:aws:s3:::bucket"));
        assert!(!is_arn("arn:aws:s3"));
        assert!(is_iam_action("s3:GetObject"));
        assert!(!is_iam_action("GetObject"));
    }

    #[test]
    fn the_interner_shares_and_forgets() {
        let mut strings = Interner::default();
        let a = strings.intern("shop");
        let b = strings.intern("shop");
        assert!(Arc::ptr_eq(&a, &b));
        drop((a, b));
        strings.sweep();
        assert!(strings.strings.is_empty());
    }
}
