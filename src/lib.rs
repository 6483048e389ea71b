//! ringmaster: an edge proxy for replicated and sharded services.
//!
//! The request path is `pipeline`: named phases in order, each calling into the
//! module of its pattern (identity, route, limit, cache, shard, balance,
//! upstream). Config is checked and converted into a typed plan in one pass, then built into an
//! immutable snapshot, swapped atomically on reload (`config`, `server`). The
//! map of modules and their layers is docs/DESIGN.md.

pub mod accesslog;
pub mod admin;
pub mod backend;
pub mod balance;
pub mod body;
pub mod cache;
pub mod child;
pub mod clock;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod hash;
pub mod heat;
pub mod http1;
pub mod identity;
pub mod jwt;
pub mod key;
pub mod limit;
pub mod loadtest;
pub mod memcache;
pub mod metrics;
pub mod normalise;
pub mod pipeline;
pub mod respond;
pub mod ring;
pub mod route;
pub mod scale;
pub mod server;
pub mod service;
pub mod shard;
pub mod tls;
pub mod upstream;
pub mod value;
