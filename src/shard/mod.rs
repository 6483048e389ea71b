//! Sharding: the sharder that picks the shard (or shards) of a request, and the
//! fan-out that sends one request to every shard and makes one answer of theirs.
//! The rings it uses are in `ring`, the keys it hashes in `key`.

pub mod fanout;
mod sharder;

pub use fanout::{FanOut, FanOutPolicy};
pub use sharder::{Sharding, Target};
