//! How the gateway's metrics get their label handles before a request needs them.
//!
//! The Prometheus library finds a labelled series by hashing its label values under a lock.
//! That is fine at start-up and on a scrape, not per request: so every series a request can
//! touch is looked up once and its handle (a shared atomic) kept in a slice indexed by the
//! request's facts (provider, status, limit). Series that must show even at 0 are bound at
//! start ([`bind_all`]); series with many possible label values of which few are ever used
//! (status codes) are bound on first use ([`Slots`]), after which recording reads a
//! `OnceLock` — an atomic load — and adds.

use std::sync::OnceLock;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Histogram bucket bounds in seconds (0.1 ms .. 60 s): the gateway's own work is well under a
/// millisecond, an upstream's answer can take a minute.
pub(crate) const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    15.0, 60.0,
];

/// Registers `collector` and hands it back, so that a field can be declared and registered in
/// one expression.
pub(crate) fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

pub(crate) fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

/// A registered counter without labels.
pub(crate) fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
) -> prometheus::Result<IntCounter> {
    register(registry, IntCounter::with_opts(opts(name, help))?)
}

/// A registered counter family over `labels`.
pub(crate) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    register(registry, IntCounterVec::new(opts(name, help), labels)?)
}

/// A registered gauge without labels.
pub(crate) fn gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    register(registry, IntGauge::with_opts(opts(name, help))?)
}

pub(crate) fn latency_opts(name: &str, help: &str) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS_SECONDS.to_vec())
}

/// A labelled family (`IntCounterVec`, `HistogramVec`, …): the library's vectors under a name
/// this crate can write (their builder types are not exported).
pub(crate) trait Family {
    type Handle;
    fn bind(&self, labels: &[&str]) -> prometheus::Result<Self::Handle>;
}

impl<T: MetricVecBuilder> Family for MetricVec<T> {
    type Handle = T::M;
    fn bind(&self, labels: &[&str]) -> prometheus::Result<T::M> {
        self.get_metric_with_label_values(labels)
    }
}

/// One handle per label set in `label_sets`, in that order.
pub(crate) fn bind_all<F: Family, S: AsRef<str>, const N: usize>(
    family: &F,
    label_sets: impl IntoIterator<Item = [S; N]>,
) -> prometheus::Result<Box<[F::Handle]>> {
    label_sets
        .into_iter()
        .map(|labels| family.bind(&labels.each_ref().map(AsRef::as_ref)))
        .collect()
}

/// A family's handles by index, each bound to its labels the first time it is used.
pub(crate) struct Slots<F: Family> {
    family: F,
    slots: Box<[OnceLock<F::Handle>]>,
}

impl<F: Family> Slots<F> {
    pub(crate) fn new(family: F, len: usize) -> Slots<F> {
        Slots {
            family,
            slots: (0..len).map(|_| OnceLock::new()).collect(),
        }
    }

    /// The handle at `index`; `labels` (called only the first time) says which series it is.
    /// None only for an index out of range or labels the family does not take, which the
    /// callers' fixed tables rule out: a metric is then not recorded rather than the request
    /// failing.
    pub(crate) fn get<S: AsRef<str>, const N: usize>(
        &self,
        index: usize,
        labels: impl FnOnce() -> [S; N],
    ) -> Option<&F::Handle> {
        let slot = self.slots.get(index)?;
        if let Some(handle) = slot.get() {
            return Some(handle);
        }
        let labels = labels();
        let handle = self
            .family
            .bind(&labels.each_ref().map(AsRef::as_ref))
            .ok()?;
        // Two first uses may race: both handles are the same series, either may be kept.
        Some(slot.get_or_init(|| handle))
    }
}

impl<F: Family + std::fmt::Debug> std::fmt::Debug for Slots<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bound = self.slots.iter().filter(|s| s.get().is_some()).count();
        f.debug_struct("Slots")
            .field("family", &self.family)
            .field("bound", &bound)
            .field("len", &self.slots.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_bound_once_and_then_shares_its_series() {
        let family = IntCounterVec::new(opts("t_total", "test"), &["code"]).unwrap();
        let slots = Slots::new(family.clone(), 3);
        let mut calls = 0;
        for _ in 0..3 {
            slots
                .get(1, || {
                    calls += 1;
                    ["201"]
                })
                .unwrap()
                .inc();
        }
        assert_eq!(calls, 1);
        assert_eq!(family.with_label_values(&["201"]).get(), 3);
        assert!(slots.get(3, || ["x"]).is_none(), "out of range");
        assert!(slots.get(0, || ["a", "b"]).is_none(), "wrong label count");
    }

    #[test]
    fn bind_all_keeps_the_order_of_its_label_sets() {
        let family = IntCounterVec::new(opts("t_total", "test"), &["p", "k"]).unwrap();
        let handles = bind_all(&family, [["a", "x"], ["b", "y"]]).unwrap();
        handles[1].inc_by(5);
        assert_eq!(family.with_label_values(&["b", "y"]).get(), 5);
        assert_eq!(family.with_label_values(&["a", "x"]).get(), 0);
    }
}
