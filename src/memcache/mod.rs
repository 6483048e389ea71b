//! The ambassador: the `memcache` listener. Clients speak memcached's text and
//! meta protocols to it; it shards their keys over a service's shards by the
//! ring, replicates writes over each shard's endpoints, fails reads over, and
//! answers in order over few pipelined server connections.
//!
//! Its own phases: parse (`request`), validate (`validate`, keys and lines), target and balance and forward
//! (`dispatch` over `service` and `upstream`), respond (`client`, in order),
//! and the counters (`stats`). Server answers are framed by `reply`; hot keys'
//! answers may be kept at the root (`hotcache`) or split over shards (`split`).

pub mod client;
pub mod dispatch;
pub mod hotcache;
pub mod repair;
pub mod reply;
pub mod request;
pub mod service;
pub mod split;
pub mod stats;
pub mod upstream;
pub mod validate;

pub use service::{Policy, Reads, Service, Shard, Writes};
