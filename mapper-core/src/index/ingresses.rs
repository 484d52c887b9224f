//! Ingresses: the hosts and load balancer addresses that lead to which Services (see
//! [`crate::exposed`]).

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::{object_key, Index, Indexed, Name, Namespaced};

#[derive(Debug, Clone)]
pub(crate) struct IngressRule {
    pub host: Option<Name>,
    pub services: Box<[Name]>,
}

#[derive(Debug, Clone)]
pub(crate) struct IngressRecord {
    pub rules: Box<[IngressRule]>,
    pub default_service: Option<Name>,
    pub load_balancer: Box<[Name]>,
}

impl Indexed for Ingress {
    fn apply_to(&self, index: &mut Index) {
        index.apply_ingress(self);
    }

    fn delete_from(&self, index: &mut Index) {
        if let Some(key) = object_key(&self.metadata) {
            index.ingresses.remove(&key.namespace, &key.name);
        }
    }

    fn reset_in(objects: &[Self], index: &mut Index) {
        index.ingresses = Namespaced::default();
        for ingress in objects {
            index.apply_ingress(ingress);
        }
    }
}

impl Index {
    fn apply_ingress(&mut self, ingress: &Ingress) {
        let Some(key) = object_key(&ingress.metadata) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let key = self.intern_key(&key);
        let spec = ingress.spec.as_ref();
        let backend_service = |b: &IngressBackend| b.service.as_ref().map(|s| s.name.clone());
        let rules = spec
            .and_then(|s| s.rules.as_ref())
            .into_iter()
            .flatten()
            .map(|rule| {
                let services: Vec<String> = rule
                    .http
                    .iter()
                    .flat_map(|h| h.paths.iter())
                    .filter_map(|p| backend_service(&p.backend))
                    .collect();
                IngressRule {
                    host: rule.host.as_deref().map(|h| self.strings.intern(h)),
                    services: services.iter().map(|s| self.strings.intern(s)).collect(),
                }
            })
            .collect();
        let default_service = spec
            .and_then(|s| s.default_backend.as_ref())
            .and_then(backend_service)
            .map(|s| self.strings.intern(&s));
        let load_balancer = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|i| i.ip.iter().chain(i.hostname.iter()))
            .map(|a| self.strings.intern(a))
            .collect();
        self.ingresses.insert(&key, IngressRecord { rules, default_service, load_balancer });
    }
}
