//! Billing asynchronous jobs: a status poll of a Firecrawl crawl or batch scrape reports the
//! credits the whole job used so far, so each poll is billed only for the part no earlier poll
//! billed. What each job billed is kept in the ledger's tables, shared by every instance.

use tollgate_domain::Provider;
use tollgate_ledger::Ledger;
use tollgate_usage::Scanned;

/// The ledger's record of what each job billed. Without it (or when it cannot be reached) the
/// reported amount is billed as is: limits may then count a job's credits more than once, never
/// less.
#[derive(Clone, Debug, Default)]
pub struct JobBilling {
    ledger: Option<Ledger>,
}

impl JobBilling {
    pub fn new(ledger: Ledger) -> JobBilling {
        JobBilling {
            ledger: Some(ledger),
        }
    }

    /// Whether billing a call of `method` on `path` may look up what its job billed before
    /// (and so must be awaited).
    pub fn looks_up(&self, provider: Provider, method: &str, path: &str) -> bool {
        self.ledger.is_some() && tollgate_usage::cumulative_job(provider, method, path).is_some()
    }

    /// Keeps in `scanned` only the part of a job poll's reported units no earlier poll billed;
    /// any other call is left as it is (and costs no I/O).
    pub async fn bill_increase(
        &self,
        provider: Provider,
        method: &str,
        path: &str,
        user: &str,
        scanned: &mut Scanned,
    ) {
        let Some(job) = tollgate_usage::cumulative_job(provider, method, path) else {
            return;
        };
        let (Some(ledger), reported) = (&self.ledger, scanned.usage.units) else {
            return;
        };
        if reported == 0 {
            return;
        }
        // Boxed: the ledger's future is large and would otherwise be inlined into every call's
        // settlement future, which Pingora allocates per request.
        let increase = Box::pin(ledger.unbilled_job_units(user, provider, job, reported)).await;
        match increase {
            Ok(increase) => scanned.usage.units = increase,
            Err(e) => tracing::warn!(error = %e, job, "billing a job's credits in full"),
        }
    }
}
