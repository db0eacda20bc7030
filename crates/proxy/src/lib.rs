//! Tollgate's request path.
//!
//! The Pingora service's hooks stay thin: each calls plain functions over headers and bytes
//! that are tested here without a server — routing, credentials, provider-shaped errors,
//! request inspection and reservation bounds.

pub mod admit;
pub mod alerts;
pub mod credentials;
pub mod errors;
pub mod gateway;
pub mod head_guard;
pub mod keys;
pub mod limits;
pub mod metering;
pub mod metrics;
pub mod request;
pub mod route;
pub mod upstream;

pub use alerts::AlertRaiser;
pub use credentials::{
    CredentialError, client_key, provider_credential, strip_client_credentials, strip_query_key,
};
pub use errors::{ErrorResponse, GatewayError, render};
pub use gateway::{Gateway, RequestCtx};
pub use head_guard::{HeadGuard, HeadLimits};
pub use keys::{Identity, KeyRing};
pub use limits::{Counters, ledger_seeder};
pub use metrics::Metrics;
pub use request::{RequestFacts, inspect, may_rewrite, rewrite_body};
pub use route::{Route, RouteError, route, upstream_target};
pub use upstream::Upstream;
