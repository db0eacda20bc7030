//! The admin API's routes, each documented for the OpenAPI document it is listed in.

pub mod alerts;
pub mod billing;
pub mod insights;
pub mod live;
pub mod logs;
pub mod plans;
pub mod recommendations;
pub mod system;
pub mod usage;
pub mod users;
