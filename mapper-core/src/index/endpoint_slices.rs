//! EndpointSlices: the pods behind each Service, and the API server's own addresses and ports
//! (the endpoints of `default/kubernetes`).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{dedup_ips, is_api_server, object_key, parse_ip, Index, Indexed, Name, ObjectKey};
use crate::identity::POD_KIND;

/// The label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, Clone)]
pub(crate) struct SliceEndpoint {
    pub addresses: Box<[IpAddr]>,
    pub pod: Option<Name>,
}

#[derive(Debug, Clone)]
pub(crate) struct SliceRecord {
    pub endpoints: Box<[SliceEndpoint]>,
    pub ports: Box<[u16]>,
}

impl Indexed for EndpointSlice {
    fn apply_to(&self, index: &mut Index) {
        index.apply_slice(self);
    }

    fn delete_from(&self, index: &mut Index) {
        if let Some(key) = object_key(&self.metadata) {
            index.remove_slice(&key);
        }
    }

    fn reset_in(objects: &[Self], index: &mut Index) {
        let keep: HashSet<ObjectKey> =
            objects.iter().filter_map(|s| object_key(&s.metadata)).collect();
        let gone: Vec<ObjectKey> =
            index.slice_services.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for key in gone {
            index.remove_slice(&key);
        }
        for slice in objects {
            index.apply_slice(slice);
        }
    }
}

impl Index {
    fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(slice_key) = object_key(&slice.metadata) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let Some(service_name) =
            slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            // A slice nobody's Service claims says nothing about any Service.
            self.remove_slice(&slice_key);
            return;
        };
        let slice_key = self.intern_key(&slice_key);
        let service = self.intern_key(&ObjectKey::new(&slice_key.namespace, service_name));
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| SliceEndpoint {
                addresses: dedup_ips(e.addresses.iter().filter_map(|a| parse_ip(a)).collect()),
                pod: e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref().is_none_or(|k| k == POD_KIND))
                    .and_then(|r| r.name.as_deref())
                    .map(|n| self.strings.intern(n)),
            })
            .collect();

        if let Some(previous_service) =
            self.slice_services.insert(slice_key.clone(), service.clone())
        {
            if previous_service != service {
                if let Some(slices) = self.slices.get_mut(&previous_service) {
                    slices.remove(&slice_key.name);
                }
                self.slices_changed(&previous_service);
            }
        }
        let ports =
            slice.ports.iter().flatten().filter_map(|p| u16::try_from(p.port?).ok()).collect();
        self.slices
            .entry(service.clone())
            .or_default()
            .insert(slice_key.name.clone(), SliceRecord { endpoints, ports });
        self.slices_changed(&service);
    }

    fn remove_slice(&mut self, slice_key: &ObjectKey) {
        let Some(service) = self.slice_services.remove(slice_key) else { return };
        if let Some(slices) = self.slices.get_mut(&service) {
            slices.remove(&slice_key.name);
            if slices.is_empty() {
                self.slices.remove(&service);
            }
        }
        self.slices_changed(&service);
    }

    fn slices_changed(&mut self, service: &ObjectKey) {
        let slices = self.slices.get(service);
        let mut pods: Vec<Name> = slices
            .into_iter()
            .flat_map(HashMap::values)
            .flat_map(|s| s.endpoints.iter())
            .filter_map(|e| e.pod.clone())
            .collect();
        pods.sort_unstable();
        pods.dedup();
        let previous = self.service_pods.remove(service).unwrap_or_default();
        for pod in previous.iter().filter(|p| pods.binary_search(p).is_err()) {
            let pod_key = ObjectKey { namespace: service.namespace.clone(), name: pod.clone() };
            if let Some(services) = self.pod_services.get_mut(&pod_key) {
                services.retain(|s| *s != service.name);
                if services.is_empty() {
                    self.pod_services.remove(&pod_key);
                }
            }
        }
        for pod in pods.iter().filter(|p| previous.binary_search(p).is_err()) {
            let pod_key = ObjectKey { namespace: service.namespace.clone(), name: pod.clone() };
            self.pod_services
                .entry(pod_key)
                .or_insert_with(|| Vec::with_capacity(1))
                .push(service.name.clone());
        }
        if !pods.is_empty() {
            self.service_pods.insert(service.clone(), pods.into_boxed_slice());
        }

        if is_api_server(service) {
            let slices = self.slices.get(service).into_iter().flat_map(HashMap::values);
            self.api_server_ips = slices
                .clone()
                .flat_map(|s| s.endpoints.iter())
                .flat_map(|e| e.addresses.iter().copied())
                .collect();
            self.api_server_ports = slices.flat_map(|s| s.ports.iter().copied()).collect();
        }
        self.dirty.services.insert(service.clone());
    }
}
