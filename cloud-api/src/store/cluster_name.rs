//! Cluster names, checked once where they come in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A cluster's name: a DNS label (1-63 lowercase letters, digits or '-', not starting or ending
/// with '-'), since it appears in node ids, URLs and file names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterName(String);

/// A name that is not a valid [`ClusterName`]; says what a valid one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster name {0:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'")]
pub struct InvalidClusterName(pub String);

impl ClusterName {
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidClusterName> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if ok {
            Ok(ClusterName(name))
        } else {
            Err(InvalidClusterName(name))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClusterName {
    type Error = InvalidClusterName;

    fn try_from(name: String) -> Result<Self, InvalidClusterName> {
        ClusterName::new(name)
    }
}

impl FromStr for ClusterName {
    type Err = InvalidClusterName;

    fn from_str(name: &str) -> Result<Self, InvalidClusterName> {
        ClusterName::new(name)
    }
}

impl From<ClusterName> for String {
    fn from(name: ClusterName) -> String {
        name.0
    }
}

impl AsRef<str> for ClusterName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for ClusterName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for ClusterName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_dns_labels() {
        for ok in ["prod", "us-east-1", "a", "0", &"x".repeat(63)] {
            assert_eq!(ClusterName::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "-prod", "prod-", "Prod", "pro_d", "pro d", "prød", &"x".repeat(64)] {
            let err = ClusterName::new(bad).unwrap_err();
            assert!(err.to_string().contains("must be 1-63 lowercase letters"), "{err}");
        }
        let name: ClusterName = serde_json::from_str("\"eu-west\"").unwrap();
        assert_eq!(name, "eu-west");
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"eu-west\"");
        assert!(serde_json::from_str::<ClusterName>("\"EU\"").is_err());
    }
}
