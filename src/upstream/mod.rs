//! Upstreams: pools of endpoints, their health, and forwarding a request to one.

pub mod budget;
pub mod connpool;
pub mod endpoint;
pub mod forward;
pub mod headers;
pub mod health;
pub mod policy;
pub mod pool;
pub mod proxy_header;
pub mod tunnel;

pub use endpoint::{Endpoint, EndpointKey};
pub use policy::{Failure, HealthCheck, Passive, Retry, UpstreamProtocol};
pub use pool::Pool;
