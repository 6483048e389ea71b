//! The phases driven in process: a snapshot built from a config text, requests
//! built in memory, and (where a phase forwards) the built-in backend on loopback.

use super::phases;
use super::*;
use crate::metrics::{Answer, GLOBAL};
use http_body_util::BodyExt;
use std::sync::atomic::Ordering::Relaxed;

const LISTENER: &str = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:1\"\n\n";

fn snapshot(body: &str) -> Snapshot {
    let plan = crate::config::parse("test.toml", &(LISTENER.to_string() + body)).unwrap_or_else(|e| panic!("{e}"));
    crate::config::build(plan, None).snapshot
}

fn conn() -> Conn {
    Conn::new("192.0.2.7:5555".parse().unwrap(), (-1, None), "main".into(), false, Default::default())
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut b = Request::get(path).header("host", "test.local");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::Empty).unwrap()
}

/// A built-in backend replica on a loopback port; its address.
async fn backend(name: &str) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(crate::backend::serve(l, name.into(), std::time::Duration::ZERO));
    addr
}

async fn text(r: Response<Body>) -> (u16, http::HeaderMap, String) {
    let (p, b) = r.into_parts();
    (p.status.as_u16(), p.headers, String::from_utf8_lossy(&b.collect().await.unwrap().to_bytes()).into_owned())
}

fn answers(a: Answer) -> u64 {
    GLOBAL.answers[a as usize].load(Relaxed)
}

fn sharded(fallback: &str) -> String {
    let mut s = format!(
        "[[routes]]\nservice = \"s\"\n\n[services.s]\nkind = \"sharded\"\nsharder = {{ key = {{ header = \"x-user\" }}, fallback = \"{fallback}\" }}\n"
    );
    for shard in ["a", "b", "c"] {
        s.push_str(&format!("[services.s.shards.{shard}]\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n"));
    }
    s
}

#[test]
fn target_sends_a_key_to_the_shard_its_ring_names() {
    let snap = snapshot(&sharded("reject"));
    let c = conn();
    let service = &snap.router.routes[0].service;
    let ring = &service.sharding.as_ref().unwrap().ring;
    let mut seen = std::collections::HashSet::new();
    for i in 0..60 {
        let user = format!("user-{i}");
        let req = get("/", &[("x-user", &user)]);
        let mut cx = Ctx::new(&c, &snap);
        phases::route(&mut cx, &req).unwrap();
        let (head, _) = req.into_parts();
        let t = phases::target(&cx, &head).unwrap();
        assert_eq!(t, Target::Pool(ring.locate(user.as_bytes()).unwrap()));
        seen.insert(t);
    }
    assert_eq!(seen.len(), 3, "60 keys reach every shard");
    // No key, fallback reject: a 400 naming the key, counted.
    let before = answers(Answer::MissingKey);
    let req = get("/", &[]);
    let mut cx = Ctx::new(&c, &snap);
    phases::route(&mut cx, &req).unwrap();
    let err = phases::target(&cx, &req.into_parts().0).unwrap_err();
    assert_eq!(err.status(), 400);
    assert_eq!(answers(Answer::MissingKey), before + 1);
    // Fallback all: the request fans out.
    let snap = snapshot(&sharded("all"));
    let req = get("/", &[]);
    let mut cx = Ctx::new(&c, &snap);
    phases::route(&mut cx, &req).unwrap();
    assert_eq!(phases::target(&cx, &req.into_parts().0).unwrap(), Target::All);
}

#[tokio::test]
async fn rate_limit_verdicts_report_and_deny_without_spending() {
    let snap = snapshot(
        "[rate_limits.two]\nrate = 2\nperiod = \"1m\"\n\n[[routes]]\nservice = \"app\"\nrate_limit = [\"two\"]\n\n[services.app]\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n",
    );
    let c = conn();
    let mut remaining = Vec::new();
    for _ in 0..2 {
        let req = get("/", &[]);
        let mut cx = Ctx::new(&c, &snap);
        phases::route(&mut cx, &req).unwrap();
        phases::rate_limit(&mut cx, &req).await.unwrap();
        let mut h = http::HeaderMap::new();
        cx.limit.as_ref().expect("a limited route reports").apply(&mut h);
        assert_eq!(h["x-ratelimit-limit"], "2");
        remaining.push(h["x-ratelimit-remaining"].to_str().unwrap().to_string());
    }
    assert_eq!(remaining, ["1", "0"]);
    let before = answers(Answer::RateLimited);
    let req = get("/", &[]);
    let mut cx = Ctx::new(&c, &snap);
    phases::route(&mut cx, &req).unwrap();
    let denied = phases::rate_limit(&mut cx, &req).await.unwrap_err();
    assert_eq!(denied.status(), 429);
    assert!(denied.headers().contains_key("retry-after"));
    assert_eq!(answers(Answer::RateLimited), before + 1);
    // Another client has its own counter.
    let other = Conn::new("192.0.2.8:1".parse().unwrap(), (-1, None), "main".into(), false, Default::default());
    let mut cx = Ctx::new(&other, &snap);
    phases::route(&mut cx, &req).unwrap();
    assert!(phases::rate_limit(&mut cx, &req).await.is_ok());
}

#[tokio::test]
async fn no_route_is_a_counted_404() {
    let snap = snapshot("[[routes]]\npath_prefix = \"/api\"\nservice = \"app\"\n\n[services.app]\nkind = \"replicated\"\n");
    let before = answers(Answer::NoRoute);
    let (status, _, _) = text(handle(get("/other", &[]), &conn(), &snap).await).await;
    assert_eq!(status, 404);
    assert_eq!(answers(Answer::NoRoute), before + 1);
}

#[tokio::test]
async fn cache_flow_miss_then_hit_and_a_hit_needs_no_affinity_key() {
    let (a, b) = (backend("a").await, backend("b").await);
    let snap = snapshot(&format!(
        "[[routes]]\nservice = \"app\"\ncache = {{ memory_bytes = 1048576, max_object_bytes = 65536 }}\n\n[services.app]\nkind = \"replicated\"\nbalancer = \"hash\"\nhash = {{ key = {{ header = \"x-user\" }}, fallback = \"reject\" }}\nendpoints = [{{ name = \"a\", address = \"{a}\" }}, {{ name = \"b\", address = \"{b}\" }}]\n"
    ));
    let c = conn();
    let path = "/cc/page?cc=max-age=60";
    let (status, h, _) = text(handle(get(path, &[("x-user", "u1")]), &c, &snap).await).await;
    assert_eq!(status, 200);
    assert!(h["cache-status"].to_str().unwrap().contains("fwd=uri-miss; stored"), "{h:?}");
    // A hit is answered before balancing: no key needed, no upstream asked.
    let (status, h, _) = text(handle(get(path, &[]), &c, &snap).await).await;
    assert_eq!(status, 200);
    assert!(h["cache-status"].to_str().unwrap().starts_with("ringmaster; hit"), "{h:?}");
    // A miss without the key is refused by the balancer, as before.
    let (status, _, body) = text(handle(get("/cc/other", &[]), &c, &snap).await).await;
    assert_eq!((status, body.trim()), (400, "this request has no header x-user, which decides where it goes"));
}

#[tokio::test]
async fn hash_affinity_sends_a_key_to_one_replica() {
    let (a, b) = (backend("a").await, backend("b").await);
    let snap = snapshot(&format!(
        "[[routes]]\nservice = \"app\"\n\n[services.app]\nkind = \"replicated\"\nbalancer = \"hash\"\nhash = {{ key = {{ header = \"x-user\" }} }}\nendpoints = [{{ name = \"a\", address = \"{a}\" }}, {{ name = \"b\", address = \"{b}\" }}]\n"
    ));
    let c = conn();
    let mut by_user = std::collections::HashMap::new();
    for round in 0..3 {
        for i in 0..20 {
            let user = format!("u{i}");
            let (_, h, _) = text(handle(get("/", &[("x-user", &user)]), &c, &snap).await).await;
            let got = h["x-backend"].to_str().unwrap().to_string();
            if round == 0 {
                by_user.insert(user, got);
            } else {
                assert_eq!(by_user[&user], got, "{user} moved");
            }
        }
    }
    assert_eq!(by_user.values().collect::<std::collections::HashSet<_>>().len(), 2, "keys reach both replicas");
}

/// The request's future is moved whole when hyper stores or spawns it; the
/// large, cold states (the upstream exchange, a coalesced wait, fan-out) are
/// boxed so that it stays small. A budget, so that growth is a decision.
#[test]
fn the_request_future_stays_small() {
    let snap = snapshot("[[routes]]\nservice = \"app\"\n\n[services.app]\nkind = \"replicated\"\n");
    let c = conn();
    let f = handle(get("/", &[]), &c, &snap);
    let size = std::mem::size_of_val(&f);
    assert!(size <= 2304, "the request future is {size} bytes; box what grew it");
}
