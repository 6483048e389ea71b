//! The ambassador: the `memcache` listener. Clients speak memcached's text and
//! meta protocols to it; it shards their keys over a service's shards by the
//! ring, replicates writes over each shard's endpoints, fails reads over, and
//! answers in order over few pipelined server connections.
//!
//! Its own phases, each in its place: parse (`request`), validate
//! (`validate`, keys and lines), target (`dispatch`, by verb, over `service`),
//! hot keys (`hotkeys`, over `hotcache` and `split`), read | write | cas of a shard's replicas
//! (`replicas`, with the `repair` log), gets of several keys (`multiget`),
//! forward (`upstream`, over shared server connections, `conn`; answers
//! framed and matched by `reply`), and answer
//! (`client`, in order, with its limits) with the counters (`stats`).

pub mod ask;
pub mod client;
mod conn;
pub mod dispatch;
pub mod hotcache;
pub mod hotkeys;
pub mod multiget;
pub mod repair;
pub mod replicas;
pub mod reply;
pub mod request;
pub mod service;
pub mod split;
pub mod stats;
#[cfg(test)]
pub(crate) mod stub;
pub mod upstream;
pub mod validate;

pub use service::{Policy, Reads, Service, Shard, Writes};
