//! Sharding: rings (consistent-hashing functions), keys taken from requests,
//! and the sharder that picks the shard or shards of a request.

pub mod analyze;
pub mod fanout;
pub mod hash;
pub mod key;
pub mod ring;
