//! Labels, interned and sorted by key, and label selectors.

use std::collections::BTreeMap;

use super::{Index, Name};

/// Labels sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Labels(Box<[(Name, Name)]>);

impl Labels {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    /// Whether every pair of `selector` is among these labels.
    pub(crate) fn matches(&self, selector: &Labels) -> bool {
        selector.0.iter().all(|(k, v)| self.get(k) == Some(v))
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Index {
    pub(super) fn intern_labels(&mut self, labels: Option<&BTreeMap<String, String>>) -> Labels {
        let pairs = labels
            .into_iter()
            .flatten()
            .map(|(k, v)| (self.strings.intern(k), self.strings.intern(v)))
            .collect();
        Labels(pairs)
    }
}
