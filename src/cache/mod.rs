//! The cache: RFC 9111 policy (pure), the store, and the lookup and store
//! steps of the request path.

pub mod policy;
