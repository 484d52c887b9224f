//! Namespaces, known by their metadata only: their labels.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Index;

impl Index {
    pub(super) fn apply_namespace(&mut self, meta: &ObjectMeta) {
        let Some(name) = meta.name.as_deref() else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let name = self.strings.intern(name);
        let labels = self.intern_labels(meta.labels.as_ref());
        self.namespaces.insert(name, labels);
    }

    pub(super) fn delete_namespace(&mut self, meta: &ObjectMeta) {
        if let Some(name) = meta.name.as_deref() {
            self.namespaces.remove(name);
        }
    }

    pub(super) fn reset_namespaces(&mut self, metas: &[ObjectMeta]) {
        self.namespaces.clear();
        for meta in metas {
            self.apply_namespace(meta);
        }
    }
}
