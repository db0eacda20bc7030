//! Tollgate's request path.
//!
//! The Pingora service's hooks (`gateway`) stay thin: each hands its phase to the module that
//! owns it — the head's checks (`head`), bodies read before admission (`body`), admission as a
//! pure decision (`admission`) and its reservation (`admit`), the upstream request
//! (`upstream`), usage metering (`metering`, which bills an implausible usage report at the
//! reservation's bound: `plausible`) and the call's settlement (`settle`). Everything
//! they read from the configuration comes from the snapshot the request started with
//! (`snapshot`). docs/architecture.md follows one call through them.

pub mod access;
pub mod admission;
mod admit;
pub mod alerts;
mod backlog;
mod body;
pub mod context;
pub mod credentials;
mod deferred;
mod durable;
pub mod errors;
pub mod exceeded;
pub mod gateway;
mod head;
pub mod head_guard;
pub mod hold;
pub mod inflight;
mod jobs;
pub mod keys;
pub mod limits;
pub mod metering;
pub mod metrics;
pub mod plausible;
pub mod pricing;
pub mod refused;
pub mod request;
pub mod request_id;
mod respond;
pub mod route;
mod settle;
pub mod snapshot;
pub mod upstream;
pub mod usage_chunk;

pub use alerts::AlertRaiser;
pub use context::RequestCtx;
pub use credentials::{
    CredentialError, client_key, provider_credential, strip_client_credentials, strip_query_key,
};
pub use errors::{ErrorResponse, GatewayError, ProxyError, render};
pub use gateway::Gateway;
pub use head_guard::{HeadGuard, HeadLimits};
pub use inflight::CutOff;
pub use keys::{Identity, KeyRing, StaticKeys};
pub use limits::{Counters, ledger_seeder};
pub use metrics::Metrics;
pub use request::{may_rewrite, rewrite_body};
pub use route::{Route, RouteError, route, upstream_target};
pub use snapshot::{Snapshot, SnapshotCell};
pub use upstream::Upstream;
