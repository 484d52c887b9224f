//! CA rotation. A CA lives a year ([`RotationPolicy::validity`]). Sixty days before it expires a
//! new one is made and published beside it (every bundle trusts both), and thirty days before,
//! the new one starts signing; the old one is dropped when it expires. A pod that started after
//! the new CA was published therefore trusts whichever signs. A stored CA without Name
//! Constraints, one that does not permit the names needed now, or one meant to live longer than
//! a year (as earlier versions made them) is replaced at once and trusted no more.
//!
//! [`plan`] decides all of this from what is stored and the time, so every replica reaches the
//! same answer; [`CaKeeper`] reads the store, writes what the plan says (a conflicting write by
//! another replica means: read again) and hands the proxy and the webhook the CA to use now
//! through a [`SharedCa`].

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::store::{CaFacts, CaStore, StoredCa};
use super::{generate_ca, permitted_names, CaError, CertificateAuthority};

/// When CAs are made, start signing and are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a new CA is valid.
    pub validity: time::Duration,
    /// A new CA is made and published when the newest one has less than this left.
    pub publish_before: time::Duration,
    /// A CA stops signing (the newer one takes over) when it has less than this left.
    pub switch_before: time::Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            validity: time::Duration::days(365),
            publish_before: time::Duration::days(60),
            switch_before: time::Duration::days(30),
        }
    }
}

/// What the store should hold, and which of it signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The CAs to keep, oldest first (one, or two while a rotation overlaps).
    pub keep: Vec<StoredCa>,
    /// The index in `keep` of the CA that signs leaves now.
    pub signing: usize,
    /// Why `keep` differs from what was stored; empty when nothing is to be written.
    pub changes: Vec<String>,
}

/// Decides what to keep at `now`; see the [module docs](self). `permitted` are the DNS names the
/// CA must permit (the AWS zones and the webhook's names).
pub fn plan(
    stored: &[StoredCa],
    permitted: &[String],
    now: OffsetDateTime,
    policy: &RotationPolicy,
) -> Result<Plan, CaError> {
    let mut changes = Vec::new();
    let mut keep: Vec<(StoredCa, CaFacts)> = Vec::new();
    for ca in stored {
        match ca.facts().and_then(|facts| {
            unsuitable(&facts, permitted, now, policy)
                .map_or(Ok(facts), |why| Err(CaError::Unusable(why)))
        }) {
            Ok(facts) => keep.push((ca.clone(), facts)),
            Err(why) => changes.push(format!("dropped a CA: {why}")),
        }
    }
    keep.sort_by_key(|(_, facts)| facts.not_after);
    if keep.last().is_none_or(|(_, newest)| newest.not_after - now < policy.publish_before) {
        let ca = generate_ca(now, permitted, policy.validity)?;
        let facts = ca.facts()?;
        changes.push(if keep.is_empty() {
            "made a new CA".to_owned()
        } else {
            "made the next CA, published beside the current one".to_owned()
        });
        keep.push((ca, facts));
    }
    while keep.len() > 2 {
        keep.remove(0);
        changes.push("dropped the oldest of three CAs".to_owned());
    }
    let signing = keep
        .iter()
        .position(|(_, facts)| facts.not_after - now >= policy.switch_before)
        .unwrap_or(keep.len() - 1);
    let keep: Vec<StoredCa> = keep.into_iter().map(|(ca, _)| ca).collect();
    if changes.is_empty() && keep != stored {
        changes.push("ordered the CAs oldest first".to_owned());
    }
    Ok(Plan { keep, signing, changes })
}

/// Why a stored CA must go now, if it must.
fn unsuitable(
    facts: &CaFacts,
    permitted: &[String],
    now: OffsetDateTime,
    policy: &RotationPolicy,
) -> Option<String> {
    if facts.not_after <= now {
        return Some(format!("it expired on {}", facts.not_after));
    }
    let Some(names) = &facts.permitted_dns else {
        return Some(
            "it has no Name Constraints, so pods would trust it for every host".to_owned(),
        );
    };
    if !facts.excludes_all_ips {
        return Some("its Name Constraints do not exclude IP addresses".to_owned());
    }
    if let Some(missing) = permitted.iter().find(|name| !names.contains(name)) {
        return Some(format!("it does not permit {missing}"));
    }
    if facts.not_after - facts.not_before > policy.validity + time::Duration::days(1) {
        return Some(format!("it is valid for longer than {} days", policy.validity.whole_days()));
    }
    None
}

// === Sharing the current CA ===

/// The CA in use now, swapped when it rotates. Cloning shares it.
#[derive(Clone)]
pub struct SharedCa(Arc<watch::Sender<Arc<CertificateAuthority>>>);

impl SharedCa {
    pub fn new(ca: Arc<CertificateAuthority>) -> Self {
        Self(Arc::new(watch::Sender::new(ca)))
    }

    /// The CA to use for the next certificate.
    pub fn current(&self) -> Arc<CertificateAuthority> {
        self.0.borrow().clone()
    }

    /// Sees every change of the CA.
    pub fn subscribe(&self) -> watch::Receiver<Arc<CertificateAuthority>> {
        self.0.subscribe()
    }

    fn replace(&self, ca: CertificateAuthority) {
        self.0.send_replace(Arc::new(ca));
    }
}

impl From<Arc<CertificateAuthority>> for SharedCa {
    fn from(ca: Arc<CertificateAuthority>) -> Self {
        Self::new(ca)
    }
}

impl From<CertificateAuthority> for SharedCa {
    fn from(ca: CertificateAuthority) -> Self {
        Self::new(Arc::new(ca))
    }
}

impl std::fmt::Debug for SharedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SharedCa").field(&self.current()).finish()
    }
}

// === Keeping the store ===

/// What time it is, for rotation.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// Keeps the stored CAs rotated and the [`SharedCa`] current.
#[derive(Clone)]
pub struct CaKeeper {
    store: CaStore,
    kube: Option<kube::Client>,
    permitted: Vec<String>,
    policy: RotationPolicy,
    clock: Clock,
}

impl CaKeeper {
    /// A keeper of `store` for CAs that permit the AWS zones and `extra_names`.
    pub fn new(store: CaStore, kube: Option<kube::Client>, extra_names: &[String]) -> Self {
        Self {
            store,
            kube,
            permitted: permitted_names(extra_names),
            policy: RotationPolicy::default(),
            clock: Arc::new(OffsetDateTime::now_utc),
        }
    }

    pub fn with_policy(self, policy: RotationPolicy) -> Self {
        Self { policy, ..self }
    }

    /// Decides rotation by `clock` rather than the system time (tests of a year's rotation).
    pub fn with_clock(self, clock: Clock) -> Self {
        Self { clock, ..self }
    }

    /// Reads the store, writes what [`plan`] says for now, and returns the CA to use.
    pub async fn refresh(&self) -> Result<CertificateAuthority, CaError> {
        self.refresh_at((self.clock)()).await
    }

    /// [`Self::refresh`] as if it were `now`.
    pub async fn refresh_at(&self, now: OffsetDateTime) -> Result<CertificateAuthority, CaError> {
        let where_ = self.store.describe();
        for _ in 0..5 {
            let loaded = self.store.load(self.kube.as_ref()).await?;
            let plan = plan(&loaded.cas, &self.permitted, now, &self.policy)?;
            if !plan.changes.is_empty() {
                if self.store.save(self.kube.as_ref(), &loaded, &plan.keep).await?.is_err() {
                    continue;
                }
                info!(store = %where_, changes = ?plan.changes, "stored the CA");
            }
            let trusted: Vec<&StoredCa> = plan.keep.iter().collect();
            return CertificateAuthority::with_trusted(&plan.keep[plan.signing], &trusted);
        }
        Err(CaError::Contended(where_))
    }

    /// Refreshes now, then every `every`, replacing the shared CA when what signs or what is
    /// trusted changes. A failed refresh keeps the CA in use and is retried next time.
    pub async fn start(self, every: Duration) -> Result<(SharedCa, JoinHandle<()>), CaError> {
        let shared = SharedCa::new(Arc::new(self.refresh().await?));
        let keeping = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match self.refresh().await {
                    Ok(ca) => {
                        let current = keeping.current();
                        if ca.signing_ca_pem() != current.signing_ca_pem()
                            || ca.ca_pem() != current.ca_pem()
                        {
                            info!(store = %self.store.describe(), "the CA rotated: new leaves and bundles from now on");
                            keeping.replace(ca);
                        }
                    }
                    Err(err) => {
                        warn!(error = %err, "checking the CA for rotation failed; keeping the current one")
                    }
                }
            }
        });
        Ok((shared, task))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(n: i64) -> time::Duration {
        time::Duration::days(n)
    }

    fn names() -> Vec<String> {
        permitted_names(&["aws-proxy.intentmap.svc".into()])
    }

    #[test]
    fn a_ca_is_made_published_early_switched_to_and_dropped() {
        let policy = RotationPolicy::default();
        let t0 = OffsetDateTime::now_utc();
        let first = plan(&[], &names(), t0, &policy).unwrap();
        assert_eq!((first.keep.len(), first.signing), (1, 0));
        assert!(!first.changes.is_empty());

        // Mid-life: nothing to do.
        let mid = plan(&first.keep, &names(), t0 + days(200), &policy).unwrap();
        assert_eq!(mid, Plan { keep: first.keep.clone(), signing: 0, changes: vec![] });

        // 59 days left: the next CA is published, the current one still signs.
        let published = plan(&first.keep, &names(), t0 + days(306), &policy).unwrap();
        assert_eq!((published.keep.len(), published.signing), (2, 0));
        assert_eq!(published.keep[0], first.keep[0]);

        // 29 days left: the next one signs, the old one is still trusted.
        let switched = plan(&published.keep, &names(), t0 + days(336), &policy).unwrap();
        assert_eq!(switched, Plan { keep: published.keep.clone(), signing: 1, changes: vec![] });

        // Expired: dropped.
        let dropped = plan(&published.keep, &names(), t0 + days(366), &policy).unwrap();
        assert_eq!((dropped.keep.as_slice(), dropped.signing), (&published.keep[1..], 0));
        assert!(dropped.changes[0].contains("expired"), "{:?}", dropped.changes);
    }

    #[test]
    fn unconstrained_long_lived_or_wrongly_named_cas_are_replaced_at_once() {
        let policy = RotationPolicy::default();
        let now = OffsetDateTime::now_utc();
        let decade = generate_ca(now, &names(), days(3650)).unwrap();
        let plan_ = plan(std::slice::from_ref(&decade), &names(), now, &policy).unwrap();
        assert_eq!(plan_.keep.len(), 1);
        assert_ne!(plan_.keep[0], decade, "a ten-year CA is not trusted any more");
        assert!(plan_.changes[0].contains("longer than 365 days"), "{:?}", plan_.changes);

        let other_names =
            generate_ca(now, &permitted_names(&["aws-proxy.other.svc".into()]), days(365)).unwrap();
        let plan_ = plan(std::slice::from_ref(&other_names), &names(), now, &policy).unwrap();
        assert!(
            plan_.changes[0].contains("does not permit aws-proxy.intentmap.svc"),
            "{:?}",
            plan_.changes
        );

        // A CA permitting more than a role needs (the webhook's names) suits the proxy alone.
        let plan_ =
            plan(std::slice::from_ref(&other_names), &permitted_names(&[]), now, &policy).unwrap();
        assert!(plan_.changes.is_empty(), "{:?}", plan_.changes);
    }
}
