//! Owners: the workload controllers (`ReplicaSet`, `Deployment`, `StatefulSet`, `Job`, any
//! kind), known by their metadata only. The index files every object under its controller, so
//! a change to an owner recomputes the workload of exactly the pods below it.

use std::collections::HashSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{object_key, Index, Name, ObjectKey};
use crate::identity::{controller_reference, OwnerLink};

#[derive(Debug, Clone)]
pub(crate) struct OwnerRecord {
    pub kind: Name,
    pub controller: Option<OwnerLink>,
}

/// An object controlled by the owner it is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dependent {
    pub owner_kind: Name,
    pub kind: Name,
    pub name: Name,
}

impl Index {
    pub(crate) fn owner(&self, namespace: &str, kind: &str, name: &str) -> Option<&OwnerRecord> {
        self.owners.get(namespace, name)?.iter().find(|r| *r.kind == *kind)
    }

    pub(super) fn apply_owner(&mut self, kind: &str, meta: &ObjectMeta) {
        let Some(key) = object_key(meta) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let key = self.intern_key(&key);
        let kind = self.strings.intern(kind);
        let controller = controller_reference(meta).map(|r| OwnerLink {
            kind: self.strings.intern(&r.kind),
            name: self.strings.intern(&r.name),
        });

        let records: &mut Vec<OwnerRecord> = self.owners.entry_or_default(&key);
        let previous = match records.iter_mut().find(|r| r.kind == kind) {
            // Status updates change nothing that identity depends on.
            Some(existing) if existing.controller == controller => return,
            Some(existing) => Some(std::mem::replace(&mut existing.controller, controller.clone())),
            None => {
                records.push(OwnerRecord { kind: kind.clone(), controller: controller.clone() });
                None
            }
        };
        if let Some(Some(old)) = &previous {
            self.unlink(&key, &kind, old);
        }
        if let Some(new) = &controller {
            self.link(&key, &kind, new);
        }
        self.invalidate_dependents(&key.namespace, &kind, &key.name);
    }

    pub(super) fn delete_owner(&mut self, kind: &str, key: &ObjectKey) {
        let Some(records) = self.owners.get_mut(&key.namespace, &key.name) else { return };
        let Some(at) = records.iter().position(|r| *r.kind == *kind) else { return };
        let removed = records.swap_remove(at);
        if records.is_empty() {
            self.owners.remove(&key.namespace, &key.name);
        }
        let key = self.intern_key(key);
        if let Some(link) = &removed.controller {
            self.unlink(&key, &removed.kind, link);
        }
        self.invalidate_dependents(&key.namespace, &removed.kind, &key.name);
    }

    pub(super) fn link(&mut self, child: &ObjectKey, child_kind: &Name, owner: &OwnerLink) {
        let owner_key = ObjectKey { namespace: child.namespace.clone(), name: owner.name.clone() };
        let dependent = Dependent {
            owner_kind: owner.kind.clone(),
            kind: child_kind.clone(),
            name: child.name.clone(),
        };
        let dependents = self.dependents.entry_or_default(&owner_key);
        if !dependents.contains(&dependent) {
            dependents.push(dependent);
        }
    }

    pub(super) fn unlink(&mut self, child: &ObjectKey, child_kind: &Name, owner: &OwnerLink) {
        let Some(dependents) = self.dependents.get_mut(&child.namespace, &owner.name) else {
            return;
        };
        dependents.retain(|d| {
            !(d.owner_kind == owner.kind && d.kind == *child_kind && d.name == child.name)
        });
        if dependents.is_empty() {
            self.dependents.remove(&child.namespace, &owner.name);
        }
    }

    /// Marks for a workload recomputation every pod below this owner.
    fn invalidate_dependents(&mut self, namespace: &Name, kind: &Name, name: &Name) {
        let mut pending = vec![(kind.clone(), name.clone())];
        let mut seen = HashSet::new();
        while let Some((kind, name)) = pending.pop() {
            if !seen.insert((kind.clone(), name.clone())) {
                continue;
            }
            for dependent in self
                .dependents
                .get(namespace, &name)
                .into_iter()
                .flatten()
                .filter(|d| d.owner_kind == kind)
            {
                if dependent.kind == self.pod_kind {
                    self.dirty.pods.insert(ObjectKey {
                        namespace: namespace.clone(),
                        name: dependent.name.clone(),
                    });
                } else {
                    pending.push((dependent.kind.clone(), dependent.name.clone()));
                }
            }
        }
    }

    /// The complete current set of owners of `kind`.
    pub(super) fn reset_owners(&mut self, kind: &str, metas: &[ObjectMeta]) {
        let keep: HashSet<ObjectKey> = metas.iter().filter_map(object_key).collect();
        let gone: Vec<ObjectKey> = self
            .owners
            .iter()
            .filter(|(ns, name, records)| {
                records.iter().any(|r| *r.kind == *kind)
                    && !keep
                        .contains(&ObjectKey { namespace: (*ns).clone(), name: (*name).clone() })
            })
            .map(|(ns, name, _)| ObjectKey { namespace: ns.clone(), name: name.clone() })
            .collect();
        for key in gone {
            self.delete_owner(kind, &key);
        }
        for meta in metas {
            self.apply_owner(kind, meta);
        }
    }
}
