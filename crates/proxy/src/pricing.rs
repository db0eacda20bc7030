//! The one price resolution, shared by admission and settlement: a provider and a model name,
//! under the gateway's policy for models without a price, give the price a call is reserved and
//! billed at, or a refusal.

use tollgate_config::{Config, UnpricedPolicy};
use tollgate_domain::{ModelPrice, PriceMatch, Provider};

use crate::errors::GatewayError;

/// The price a model resolves to.
#[derive(Clone, Copy, Debug)]
pub enum PriceFor<'a> {
    /// Its own entry in `pricing/` (or its alias's, or the provider's `"*"`).
    Listed(PriceMatch<'a>),
    /// No entry; `[pricing] unpriced = "allow"` bills it at the configured default.
    Default(&'a ModelPrice),
    /// No entry and no default: nothing can be billed beyond what the provider reports.
    Unpriced,
}

impl<'a> PriceFor<'a> {
    pub fn price(&self) -> Option<&'a ModelPrice> {
        match self {
            PriceFor::Listed(m) => Some(m.price),
            PriceFor::Default(p) => Some(p),
            PriceFor::Unpriced => None,
        }
    }

    /// The label recorded with each usage event, so that a bill can name the price it used.
    pub fn version(&self) -> String {
        match self {
            PriceFor::Listed(m) => m.version(),
            PriceFor::Default(_) => "unpriced-default".to_owned(),
            PriceFor::Unpriced => "unpriced".to_owned(),
        }
    }
}

/// What `model` of `provider` is priced at.
pub fn resolve<'a>(config: &'a Config, provider: Provider, model: &str) -> PriceFor<'a> {
    match (
        config.prices.lookup(provider, model),
        &config.pricing.unpriced,
    ) {
        (Some(found), _) => PriceFor::Listed(found),
        (None, UnpricedPolicy::Allow(default)) => PriceFor::Default(default.as_ref()),
        (None, UnpricedPolicy::Reject) => PriceFor::Unpriced,
    }
}

/// The price admission reserves at: a token-billed call to a model without a price is refused
/// under `unpriced = "reject"` (its cost could not be bounded); a per-call provider's unpriced
/// endpoint is admitted and counted in calls only.
pub fn for_admission<'a>(
    config: &'a Config,
    provider: Provider,
    model: &str,
) -> Result<PriceFor<'a>, GatewayError> {
    match resolve(config, provider, model) {
        PriceFor::Unpriced if provider.is_token_billed() => Err(GatewayError::UnpricedModel {
            model: model.to_owned(),
        }),
        found => Ok(found),
    }
}
