//! Pod IP leases: which pod held an address when. A lease outlives its pod by
//! [`IndexConfig::deleted_pod_ip_grace`](crate::IndexConfig::deleted_pod_ip_grace), for
//! connections reported late.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{Index, Name, ObjectKey, PodRecord};
use crate::identity::Workload;

/// When a pod's hold on an IP ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseEnd {
    Open,
    At(DateTime<Utc>),
    /// Ended at a time nobody told us; `noticed` is when [`Index::prune`] first saw it.
    Unknown {
        noticed: Option<DateTime<Utc>>,
    },
}

/// A pod's hold on an IP: from its start to its deletion.
#[derive(Debug, Clone)]
pub(crate) struct IpLease {
    pub pod: ObjectKey,
    pub uid: Option<Name>,
    pub workload: Arc<Workload>,
    pub from: Option<DateTime<Utc>>,
    pub end: LeaseEnd,
    /// The pod's node, which alone may report it as a client (see [`Index::address_node`]).
    pub node: Option<Name>,
}

impl Index {
    /// Drops IP leases of pods that ended longer than
    /// [`IndexConfig::deleted_pod_ip_grace`](crate::IndexConfig::deleted_pod_ip_grace) ago.
    /// Returns how many were dropped.
    /// Whether `ip` lies in the pod network (a /24 or /64 some pod address was ever in): an
    /// address there that no pod holds is a pod the index does not know (yet, or any more), not
    /// a client from outside the cluster.
    pub fn in_pod_network(&self, ip: IpAddr) -> bool {
        self.pod_networks.contains(&pod_network(ip))
    }

    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let grace = self.config.deleted_pod_ip_grace;
        let mut dropped = 0;
        self.pod_ips.retain(|_, leases| {
            let before = leases.len();
            leases.retain_mut(|lease| match &mut lease.end {
                LeaseEnd::Open => true,
                LeaseEnd::At(end) => *end + grace >= now,
                LeaseEnd::Unknown { noticed } => *noticed.get_or_insert(now) + grace >= now,
            });
            dropped += before - leases.len();
            !leases.is_empty()
        });
        dropped
    }

    pub(super) fn update_leases(
        &mut self,
        key: &ObjectKey,
        old: Option<&PodRecord>,
        new: Option<&PodRecord>,
        removal_end: LeaseEnd,
    ) {
        if let Some(old) = old.filter(|o| !o.host_network) {
            let kept: &[IpAddr] = match new {
                Some(new) if new.uid == old.uid && !new.host_network => &new.ips,
                _ => &[],
            };
            for ip in old.ips.iter().filter(|ip| !kept.contains(ip)) {
                for lease in self.pod_ips.get_mut(ip).into_iter().flatten() {
                    if lease.pod == *key && lease.uid == old.uid && lease.end == LeaseEnd::Open {
                        lease.end = removal_end;
                    }
                }
            }
        }
        let Some(new) = new.filter(|n| !n.host_network) else { return };
        for ip in new.ips.iter() {
            self.pod_networks.insert(pod_network(*ip));
            // Most addresses only ever have one lease.
            let leases = self.pod_ips.entry(*ip).or_insert_with(|| Vec::with_capacity(1));
            match leases.iter_mut().find(|l| l.pod == *key && l.uid == new.uid) {
                Some(lease) => {
                    lease.workload = new.workload.clone();
                    lease.from = new.from;
                    lease.end = new.end;
                    lease.node = new.node.clone();
                }
                None => leases.push(IpLease {
                    pod: key.clone(),
                    uid: new.uid.clone(),
                    workload: new.workload.clone(),
                    from: new.from,
                    end: new.end,
                    node: new.node.clone(),
                }),
            }
        }
    }
}

/// The network a pod address lies in, as far as telling pods from the outside goes: its /24
/// (IPv4) or /64 (IPv6), the smallest blocks CNIs hand to a node.
pub(crate) fn pod_network(ip: IpAddr) -> (bool, u128) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4) >> 8)),
        IpAddr::V6(v6) => (true, u128::from(v6) >> 64),
    }
}
