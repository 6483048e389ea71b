//! The cache: RFC 9111 policy (pure), the store, and the cache flow of the
//! request path (lookup, then answer, wait, revalidate or forward, then store
//! or refresh).

pub mod fields;
pub mod flow;
pub mod key;
pub mod policy;
pub mod serve;
pub mod store;
pub mod tee;
