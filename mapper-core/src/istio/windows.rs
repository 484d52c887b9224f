//! What each sidecar's `istio_requests_total` grew by since its previous scrape.
//!
//! Counters are totals since the sidecar started, so only their increases are calls seen now:
//!
//! - The first scrape of a pod is a baseline and reports nothing: a path called once yesterday
//!   must not appear as called now. A pod that started after the first round is the exception:
//!   everything it counted happened since then.
//! - A series absent from the previous scrape counts in full (Envoy creates it on its first
//!   request, or recreated it after evicting it).
//! - A value lower than before is a counter reset (the sidecar restarted): the new value is the
//!   increase. So is every value when `envoy_server_uptime` went down.
//! - A pod no longer scraped is forgotten; one whose scrape failed keeps its last values, so the
//!   next successful scrape reports what happened in between.
//! - At most [`MAX_TRACKED_SERIES`] series are followed over all sidecars (a series costs a hash
//!   and a value); past it, a sidecar's further series are counted and not followed.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::metrics::{RequestSeries, SidecarMetrics};
use crate::index::{LabelledPod, Name};

/// Series followed over all sidecars.
pub const MAX_TRACKED_SERIES: usize = 100_000;

/// Requests one series counted since the previous scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIncrease {
    pub series: RequestSeries,
    pub requests: u64,
}

/// What one scrape's text held, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeCounts {
    pub malformed_lines: u64,
    pub baseline: bool,
    pub counter_resets: u64,
    pub untracked_series: u64,
}

#[derive(Debug, Default)]
struct PodWindow {
    values: HashMap<u64, f64>,
    uptime: Option<f64>,
}

/// The last values of every sidecar's series (see the module documentation).
#[derive(Debug, Default)]
pub struct IstioWindows {
    first_round: Option<DateTime<Utc>>,
    pods: HashMap<Name, PodWindow>,
    /// Series followed, over all pods.
    tracked: usize,
}

impl IstioWindows {
    /// Begins a round at `now` over these pods: forgets the pods not among them.
    pub fn begin_round(&mut self, pods: &[&LabelledPod], now: DateTime<Utc>) {
        self.first_round.get_or_insert(now);
        let keep: HashSet<Name> = pods.iter().map(|p| pod_key(p)).collect();
        self.pods.retain(|key, _| keep.contains(key));
        self.tracked = self.pods.values().map(|w| w.values.len()).sum();
    }

    /// Whether the pod's sidecar has a baseline (its requests will be reported from it).
    pub fn follows(&self, pod: &LabelledPod) -> bool {
        self.pods.contains_key(&pod_key(pod))
    }

    /// The increases in one pod's scrape since its previous one.
    pub fn increases(
        &mut self,
        pod: &LabelledPod,
        metrics: &SidecarMetrics,
    ) -> (Vec<RequestIncrease>, ScrapeCounts) {
        let mut counts = ScrapeCounts {
            malformed_lines: metrics.malformed_lines,
            untracked_series: metrics.untracked_series,
            ..ScrapeCounts::default()
        };
        let first_round = self.first_round;
        let known = self.pods.contains_key(&pod_key(pod));
        let window = self.pods.entry(pod_key(pod)).or_default();
        // This pod's series are counted afresh against the limit.
        let room =
            MAX_TRACKED_SERIES.saturating_sub(self.tracked.saturating_sub(window.values.len()));
        // A pod seen for the first time counts in full only if it started after the first round.
        counts.baseline = !known
            && !matches!((pod.started, first_round), (Some(started), Some(first)) if started > first);
        let restarted =
            matches!((window.uptime, metrics.uptime), (Some(before), Some(now)) if now < before);
        if metrics.uptime.is_some() {
            window.uptime = metrics.uptime;
        }
        let kept = metrics.requests.len().min(room);
        counts.untracked_series =
            counts.untracked_series.saturating_add((metrics.requests.len() - kept) as u64);
        let mut values = HashMap::with_capacity(kept);
        let mut increases = Vec::new();
        for sample in &metrics.requests[..kept] {
            let increase = match window.values.get(&sample.key) {
                _ if counts.baseline => 0.0,
                Some(before) if restarted => {
                    counts.counter_resets =
                        counts.counter_resets.saturating_add(u64::from(*before > 0.0));
                    sample.value
                }
                Some(before) if sample.value < *before => {
                    counts.counter_resets = counts.counter_resets.saturating_add(1);
                    sample.value
                }
                Some(before) => sample.value - before,
                None => sample.value,
            };
            // Counters are integers; a fraction would be Envoy's rounding of nothing. `as`
            // saturates: a forged 1e300 is u64::MAX requests, which edges add up saturating.
            let requests = increase.round() as u64;
            if requests > 0 {
                increases.push(RequestIncrease { series: sample.series.clone(), requests });
            }
            values.insert(sample.key, sample.value);
        }
        self.tracked =
            self.tracked.saturating_sub(window.values.len()).saturating_add(values.len());
        window.values = values;
        (increases, counts)
    }

    /// Series followed, over all pods.
    pub fn tracked_series(&self) -> usize {
        self.tracked
    }
}

fn pod_key(pod: &LabelledPod) -> Name {
    match &pod.uid {
        Some(uid) => uid.clone(),
        None => format!("{}/{}", pod.pod.namespace, pod.pod.name).into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::Workload;
    use crate::index::ObjectKey;
    use crate::istio::read_metrics;

    fn pod(uid: &str, started: &str) -> LabelledPod {
        LabelledPod {
            pod: ObjectKey::new("shop", uid),
            uid: Some(uid.into()),
            ip: "10.244.0.5".parse().unwrap(),
            started: Some(started.parse().unwrap()),
            workload: Arc::new(Workload::named("shop", "cart", Some("Deployment"))),
        }
    }

    fn text(series: &[(&str, f64)]) -> SidecarMetrics {
        let text: String = series
            .iter()
            .map(|(path, value)| {
                format!("istio_requests_total{{reporter=\"destination\",source_workload=\"web\",request_path=\"{path}\",response_code=\"200\"}} {value}\n")
            })
            .collect();
        read_metrics(&text)
    }

    fn with_uptime(uptime: u64, mut metrics: SidecarMetrics) -> SidecarMetrics {
        metrics.uptime = Some(uptime as f64);
        metrics
    }

    fn paths(increases: &[RequestIncrease]) -> Vec<(String, u64)> {
        increases.iter().map(|i| (i.series.request_path.clone().unwrap(), i.requests)).collect()
    }

    #[test]
    fn the_first_scrape_is_a_baseline_then_increases_count() {
        let now: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let cart = pod("cart-1", "2025-12-01T00:00:00Z");
        let mut windows = IstioWindows::default();
        windows.begin_round(&[&cart], now);
        let (found, counts) = windows.increases(&cart, &text(&[("/old", 7.0)]));
        assert!(found.is_empty() && counts.baseline, "yesterday's calls are not today's");

        let (found, counts) = windows.increases(&cart, &text(&[("/old", 7.0), ("/new", 2.0)]));
        assert_eq!(
            paths(&found),
            vec![("/new".to_owned(), 2)],
            "an unchanged counter is no call; a new series counts in full"
        );
        assert!(!counts.baseline);

        let (found, counts) = windows.increases(&cart, &text(&[("/old", 3.0), ("/new", 5.0)]));
        assert_eq!(
            paths(&found),
            vec![("/old".to_owned(), 3), ("/new".to_owned(), 3)],
            "a reset counts its new value"
        );
        assert_eq!(counts.counter_resets, 1);
    }

    #[test]
    fn a_restart_seen_in_the_uptime_counts_every_series_in_full() {
        let now: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let cart = pod("cart-1", "2025-12-01T00:00:00Z");
        let mut windows = IstioWindows::default();
        windows.begin_round(&[&cart], now);
        windows.increases(&cart, &with_uptime(500, text(&[("/a", 4.0)])));
        // Restarted and already past its old value: only the uptime tells.
        let (found, counts) = windows.increases(&cart, &with_uptime(20, text(&[("/a", 6.0)])));
        assert_eq!(paths(&found), vec![("/a".to_owned(), 6)]);
        assert_eq!(counts.counter_resets, 1);
    }

    #[test]
    fn new_pods_count_in_full_and_gone_pods_are_forgotten() {
        let first: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let old = pod("cart-1", "2025-12-01T00:00:00Z");
        let mut windows = IstioWindows::default();
        windows.begin_round(&[&old], first);
        windows.increases(&old, &text(&[("/a", 4.0)]));

        let young = pod("cart-2", "2026-01-01T10:00:30Z");
        windows.begin_round(&[&young], "2026-01-01T10:01:00Z".parse().unwrap());
        let (found, counts) = windows.increases(&young, &text(&[("/a", 2.0)]));
        assert_eq!(
            paths(&found),
            vec![("/a".to_owned(), 2)],
            "started after the first round: all of it is new"
        );
        assert!(!counts.baseline);

        windows.begin_round(&[&old], "2026-01-01T10:02:00Z".parse().unwrap());
        let (found, counts) = windows.increases(&old, &text(&[("/a", 9.0)]));
        assert!(
            found.is_empty() && counts.baseline,
            "forgotten while not scraped, so a baseline again"
        );
    }

    #[test]
    fn past_the_limit_over_all_sidecars_further_series_are_counted_not_followed() {
        let now: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let per_pod = crate::istio::MAX_SERIES_PER_POD;
        let many = |from: usize| SidecarMetrics {
            requests: (from..from + per_pod)
                .map(|i| crate::istio::RequestSample {
                    key: i as u64,
                    series: RequestSeries::default(),
                    value: 1.0,
                })
                .collect(),
            ..SidecarMetrics::default()
        };
        let pods: Vec<LabelledPod> = (0..=MAX_TRACKED_SERIES / per_pod)
            .map(|i| pod(&format!("p-{i}"), "2025-12-01T00:00:00Z"))
            .collect();
        let mut windows = IstioWindows::default();
        windows.begin_round(&pods.iter().collect::<Vec<_>>(), now);
        let mut untracked = 0;
        for (i, pod) in pods.iter().enumerate() {
            untracked += windows.increases(pod, &many(i * per_pod)).1.untracked_series;
        }
        assert_eq!(windows.tracked_series(), MAX_TRACKED_SERIES);
        assert_eq!(untracked, per_pod as u64, "the last sidecar's series had no room");
        // A sidecar that shrinks makes room again; a pod that goes away gives its room back.
        windows.begin_round(&pods[1..].iter().collect::<Vec<_>>(), now);
        assert_eq!(windows.tracked_series(), MAX_TRACKED_SERIES - per_pod);
    }
}
