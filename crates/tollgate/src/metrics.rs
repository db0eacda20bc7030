//! What the binary adds to the gateway's metrics registry before serving: the ledger's
//! metrics, the process's (CPU, memory, file descriptors, start time) and
//! `tollgate_build_info`. All are read when scraped; none is touched by a request.

use prometheus::{IntGaugeVec, Opts};
use tollgate_admin::metrics::LedgerCollector;
use tollgate_ledger::LedgerHandle;
use tollgate_proxy::Metrics;

/// The version, compiler and commit this binary was built from (see build.rs).
pub const BUILD: [(&str, &str); 3] = [
    ("version", env!("CARGO_PKG_VERSION")),
    ("rustc", env!("TOLLGATE_RUSTC_VERSION")),
    ("git_sha", env!("TOLLGATE_GIT_SHA")),
];

/// Registers the ledger's, the process's and the build's metrics beside the gateway's.
pub fn register(metrics: &Metrics, ledger: LedgerHandle) -> prometheus::Result<()> {
    let registry = metrics.registry();
    registry.register(Box::new(LedgerCollector::new(move || ledger.metrics())?))?;
    registry.register(Box::new(build_info()?))?;
    // The library reads /proc, so its process collector exists on Linux only.
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(())
}

/// A gauge that is always 1, whose labels say what was built: a dashboard can join on it or
/// show a version change across a fleet.
fn build_info() -> prometheus::Result<IntGaugeVec> {
    let labels = BUILD.map(|(name, _)| name);
    let info = IntGaugeVec::new(
        Opts::new(
            "tollgate_build_info",
            "Always 1; the labels say which release (version), compiler (rustc) and commit (git_sha) built this binary.",
        ),
        &labels,
    )?;
    info.get_metric_with_label_values(&BUILD.map(|(_, value)| value))?
        .set(1);
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_what_built_the_binary() {
        let text = prometheus::TextEncoder::new()
            .encode_to_string(
                &[build_info().unwrap()]
                    .iter()
                    .flat_map(|c| {
                        use prometheus::core::Collector;
                        c.collect()
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert!(text.contains("tollgate_build_info{git_sha=\""), "{text}");
        let version = format!(
            "rustc=\"{}\",version=\"{}\"}} 1",
            env!("TOLLGATE_RUSTC_VERSION"),
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&version), "{text}");
        assert!(
            !env!("TOLLGATE_RUSTC_VERSION").contains(' '),
            "only the version number"
        );
    }
}
