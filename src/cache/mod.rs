//! The cache: RFC 9111 policy (pure), the store, and the lookup and store
//! steps of the request path.

pub mod key;
pub mod policy;
pub mod serve;
pub mod step;
pub mod store;
pub mod tee;
