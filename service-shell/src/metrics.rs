//! One Prometheus registry per binary and its `GET /metrics` answer (OpenMetrics text).
//!
//! Metrics kept as they happen (`prometheus_client`'s `Counter`, `Family`, `Histogram`, ...) are
//! [`Registry::register`]ed; counters a service already keeps in its own atomics are read when
//! scraped, with [`Registry::register_scrape`]. Either way a counter named `x` is exposed as the
//! family `x` with the sample `x_total`.

use std::fmt;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The content type of [`Registry::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A binary's metrics, every name under one prefix (`intentmap_cloud`, `intentmap_mapper`, ...).
#[derive(Debug)]
pub struct Registry {
    inner: prometheus_client::registry::Registry,
}

impl Registry {
    /// A registry whose metrics are all named `{prefix}_...`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self { inner: prometheus_client::registry::Registry::with_prefix(prefix) }
    }

    /// Registers a metric kept as things happen. `help` gets a full stop appended; a counter
    /// named `x` is sampled as `x_total`.
    pub fn register(
        &mut self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.inner.register(name, help, metric);
    }

    /// Registers metrics read at every scrape: `read` is called with a [`Scrape`] to write them
    /// to, in the order they should appear.
    pub fn register_scrape<F>(&mut self, read: F)
    where
        F: Fn(&mut Scrape<'_>) + Send + Sync + 'static,
    {
        self.inner.register_collector(Box::new(ScrapeCollector(read)));
    }

    /// The OpenMetrics text of every metric, ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(fmt::Error) = prometheus_client::encoding::text::encode(&mut out, &self.inner) {
            // Writing to a String cannot fail: a metric refused its own value.
            tracing::error!(
                "a metric could not be encoded; /metrics is cut short (this is a bug: report it)"
            );
        }
        out
    }

    /// The answer to `GET /metrics`: [`Self::encode`] with its [`CONTENT_TYPE`].
    pub fn response(&self) -> Response {
        ([(header::CONTENT_TYPE, CONTENT_TYPE)], self.encode()).into_response()
    }
}

/// What a [`Registry::register_scrape`] callback writes a scrape's values to.
pub struct Scrape<'a> {
    encoder: DescriptorEncoder<'a>,
    result: fmt::Result,
}

impl Scrape<'_> {
    /// A counter: `name` without `_total` (the sample gets it), `help` as written.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.write(name, help, ConstCounter::new(value));
    }

    /// A gauge: `help` as written; values past `i64::MAX` are shown as `i64::MAX`.
    pub fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.write(name, help, ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)));
    }

    fn write(&mut self, name: &str, help: &str, metric: impl EncodeMetric) {
        if self.result.is_err() {
            return;
        }
        self.result = self
            .encoder
            .encode_descriptor(name, help, None, metric.metric_type())
            .and_then(|encoder| metric.encode(encoder));
    }
}

struct ScrapeCollector<F>(F);

impl<F> fmt::Debug for ScrapeCollector<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScrapeCollector")
    }
}

impl<F> Collector for ScrapeCollector<F>
where
    F: Fn(&mut Scrape<'_>) + Send + Sync + 'static,
{
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut scrape = Scrape { encoder, result: Ok(()) };
        (self.0)(&mut scrape);
        scrape.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn live_and_scraped_metrics_share_one_exposition() {
        let mut registry = Registry::with_prefix("svc");
        let requests = Counter::<u64>::default();
        registry.register("requests", "Requests answered", requests.clone());
        requests.inc_by(3);
        registry.register_scrape(|m| {
            m.gauge("held", "Items held now", 7);
            m.counter("dropped", "Items dropped.", u64::MAX);
        });
        assert_eq!(
            registry.encode(),
            "# HELP svc_requests Requests answered.\n\
             # TYPE svc_requests counter\n\
             svc_requests_total 3\n\
             # HELP svc_held Items held now\n\
             # TYPE svc_held gauge\n\
             svc_held 7\n\
             # HELP svc_dropped Items dropped.\n\
             # TYPE svc_dropped counter\n\
             svc_dropped_total 18446744073709551615\n\
             # EOF\n"
        );
    }

    #[test]
    fn huge_gauges_saturate_instead_of_failing() {
        let mut registry = Registry::with_prefix("svc");
        registry.register_scrape(|m| m.gauge("big", "Big", u64::MAX));
        assert!(registry.encode().contains("\nsvc_big 9223372036854775807\n"));
    }

    #[tokio::test]
    async fn the_response_says_openmetrics() {
        let registry = Registry::with_prefix("svc");
        let response = registry.response();
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
    }
}
