//! The request path: the phases in the order they run, and nothing else. Each
//! phase is a short function in `phases`, over one request context ([`Ctx`]),
//! that calls into the module of its pattern (identity, route, limit, cache,
//! shard, balance, upstream). A phase that answers early returns the answer as
//! `Err`; every answer, early or not, goes through `respond` and `log`.

// An early answer is a whole response returned by value, as any answer is; boxing
// it would cost an allocation on every cache hit, which answers early.
#![allow(clippy::result_large_err)]

mod ctx;
mod phases;
#[cfg(test)]
mod tests;

pub use ctx::{Conn, Ctx};

use crate::body::Body;
use crate::config::compile::Snapshot;
use crate::shard::Target;
use http::{Request, Response};

/// An answer given before the request reached an upstream.
type Early = Response<Body>;

/// Handles one request from a client of connection `conn`, on snapshot `snap`.
pub async fn handle(req: Request<Body>, conn: &Conn, snap: &Snapshot) -> Response<Body> {
    let mut cx = Ctx::new(conn, snap);
    let resp = match serve(&mut cx, req).await {
        Ok(r) | Err(r) => r,
    };
    phases::log(&cx, phases::respond(&cx, resp))
}

async fn serve<'a>(cx: &mut Ctx<'a>, req: Request<Body>) -> Result<Response<Body>, Early> {
    phases::begin(cx, &req);
    phases::listener_policy(cx, &req)?;
    phases::parse_limits(cx, &req)?;
    phases::identify(cx, &req);
    phases::route(cx, &req)?;
    phases::rate_limit(cx, &req).await?;
    let (mut head, body) = req.into_parts();
    let after = phases::cache_lookup(cx, &mut head).await?;
    let resp = match phases::target(cx, &head)? {
        Target::Pool(i) => phases::forward(cx, i, head, body).await?,
        Target::All => phases::fan_out(cx, head, body).await?,
    };
    Ok(after.complete(resp))
}
