//! The map every namespaced kind is kept in.

use std::collections::HashMap;

use super::{Name, ObjectKey};

/// Namespace → name → value, so a namespace can be walked and lookups take `&str`.
#[derive(Debug)]
pub(crate) struct Namespaced<T> {
    by_namespace: HashMap<Name, HashMap<Name, T>>,
}

impl<T> Default for Namespaced<T> {
    fn default() -> Self {
        Self { by_namespace: HashMap::new() }
    }
}

impl<T> Namespaced<T> {
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.by_namespace.get(namespace)?.get(name)
    }

    pub(crate) fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut T> {
        self.by_namespace.get_mut(namespace)?.get_mut(name)
    }

    pub(crate) fn insert(&mut self, key: &ObjectKey, value: T) -> Option<T> {
        self.by_namespace.entry(key.namespace.clone()).or_default().insert(key.name.clone(), value)
    }

    pub(crate) fn entry_or_default(&mut self, key: &ObjectKey) -> &mut T
    where
        T: Default,
    {
        self.by_namespace
            .entry(key.namespace.clone())
            .or_default()
            .entry(key.name.clone())
            .or_default()
    }

    pub(crate) fn remove(&mut self, namespace: &str, name: &str) -> Option<T> {
        let names = self.by_namespace.get_mut(namespace)?;
        let removed = names.remove(name);
        if names.is_empty() {
            self.by_namespace.remove(namespace);
        }
        removed
    }

    pub(crate) fn in_namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = (&'a Name, &'a T)> + 'a {
        self.by_namespace.get(namespace).into_iter().flatten()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Name, &Name, &T)> {
        self.by_namespace
            .iter()
            .flat_map(|(ns, names)| names.iter().map(move |(name, v)| (ns, name, v)))
    }

    pub(crate) fn keys(&self) -> Vec<ObjectKey> {
        self.iter()
            .map(|(ns, name, _)| ObjectKey { namespace: ns.clone(), name: name.clone() })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }
}
