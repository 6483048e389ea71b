//! The request path: the phases in the order they run, and nothing else. Each
//! phase is a short function in `phases`, over one request context ([`Ctx`]),
//! that calls into the module of its pattern (identity, route, limit, cache,
//! shard, balance, upstream). A phase that answers early returns the answer as
//! `Err`; every answer, early or not, goes through `respond` and `log` (`finish`).

// An early answer is a whole response returned by value, as any answer is; boxing
// it would cost an allocation on every cache hit, which answers early.
#![allow(clippy::result_large_err)]

mod ctx;
mod phases;
#[cfg(test)]
mod tests;

pub use ctx::{Conn, Ctx};

use crate::body::Body;
use crate::config::Snapshot;
use crate::shard::Target;
use http::{Request, Response};

/// An answer given before the request reached an upstream.
type Early = Response<Body>;

/// Takes a phase's result; an early answer ends the request there (respond, log).
macro_rules! phase {
    ($cx:expr, $result:expr) => {
        match $result {
            Ok(v) => v,
            Err(early) => return phases::finish($cx, early),
        }
    };
}

/// Handles one request from a client of connection `conn`, on snapshot `snap`.
/// One async function over the phases, so the request's future is built once.
pub async fn handle(mut req: Request<Body>, conn: &Conn, snap: &Snapshot) -> Response<Body> {
    let cx = &mut Ctx::new(conn, snap);
    phases::begin(cx, &req);
    phase!(cx, phases::normalise(cx, &mut req));
    phase!(cx, phases::listener_policy(cx, &req));
    phase!(cx, phases::parse_limits(cx, &req));
    phases::identify(cx, &req);
    phase!(cx, phases::route(cx, &req));
    phase!(cx, phases::rate_limit(cx, &req).await);
    let (mut head, body) = req.into_parts();
    let after = phase!(cx, phases::cache_lookup(cx, &mut head).await);
    let target = phase!(cx, phases::target(cx, &head));
    let (after, spread) = phase!(cx, phases::hot_keys(cx, &mut head, &target, after).await);
    let resp = match target {
        Target::Pool(i) => phase!(cx, phases::forward(cx, i, head, body, spread).await),
        Target::All => phase!(cx, phases::fan_out(cx, head, body).await),
    };
    phases::finish(cx, after.complete(resp))
}
