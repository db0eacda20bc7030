//! Tollgate's request path.
//!
//! The Pingora service's hooks stay thin: each calls plain functions over headers and bytes
//! that are tested here without a server — routing, credentials, provider-shaped errors.

pub mod credentials;
pub mod errors;
pub mod request;
pub mod route;

pub use credentials::{
    CredentialError, client_key, provider_credential, strip_client_credentials, strip_query_key,
};
pub use errors::{ErrorResponse, GatewayError, render};
pub use request::{RequestFacts, inspect, with_stream_usage};
pub use route::{Route, RouteError, route, upstream_target};
