//! DNS discovery against a DNS server the test runs (hickory-proto's
//! messages over UDP, answers changed on cue): a pool follows its name's
//! addresses as pool updates (no reload); NXDOMAIN, SERVFAIL and an empty
//! answer are held while the last known set keeps serving; an answer that
//! would drop more than max_drop of the pool waits max_stale; every hold is
//! counted and shown with its age.

mod common;
use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{rdata::A, rdata::SRV, Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
enum Answer {
    Addrs(Vec<Ipv4Addr>),
    NxDomain,
    ServFail,
    Empty,
}

/// A DNS server on loopback that answers every A question as told (TTL 1
/// s), and SRV questions with the targets (name, port) it is given.
struct Dns {
    addr: SocketAddr,
    answer: Arc<Mutex<Answer>>,
    srv: Arc<Mutex<Vec<(String, u16)>>>,
}

impl Dns {
    fn start(first: Answer) -> Dns {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let answer = Arc::new(Mutex::new(first));
        let srv = Arc::new(Mutex::new(Vec::new()));
        let (told, targets) = (answer.clone(), srv.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.authoritative = true;
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                for query in &q.queries {
                    r.add_query(query.clone());
                }
                if let Some(query) = q.queries.first().filter(|q| q.query_type() == RecordType::SRV) {
                    for (target, port) in targets.lock().unwrap().iter() {
                        let srv = SRV::new(0, 1, *port, Name::from_ascii(target).unwrap());
                        r.add_answer(Record::from_rdata(query.name().clone(), 1, RData::SRV(srv)));
                    }
                    let _ = sock.send_to(&r.to_vec().unwrap(), from);
                    continue;
                }
                match (told.lock().unwrap().clone(), q.queries.first()) {
                    (Answer::NxDomain, _) => r.metadata.response_code = ResponseCode::NXDomain,
                    (Answer::ServFail, _) => r.metadata.response_code = ResponseCode::ServFail,
                    (Answer::Addrs(ips), Some(query)) if query.query_type() == RecordType::A => {
                        for ip in ips {
                            r.add_answer(Record::from_rdata(query.name().clone(), 1, RData::A(A(ip))));
                        }
                    }
                    // No AAAA records, and an empty answer: NOERROR with nothing.
                    _ => {}
                }
                let _ = sock.send_to(&r.to_vec().unwrap(), from);
            }
        });
        Dns { addr, answer, srv }
    }

    fn tell(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }
}

fn endpoints(p: &Proxy) -> Vec<String> {
    let d = p.admin_json("/admin/discovery");
    let mut v: Vec<String> =
        d["pools"]["app"]["endpoints"].as_array().map(|a| a.iter().map(|e| e.as_str().unwrap().to_string()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn holds(p: &Proxy, reason: &str) -> f64 {
    p.metric(&format!("ringmaster_discovery_holds_total{{pool=\"app\",reason=\"{reason}\"}}"))
}

#[test]
fn a_pool_follows_its_name_and_the_guardrails_hold_bad_answers() {
    let ip = |last: u8| Ipv4Addr::new(127, 0, 0, last);
    let port = free_port();
    let _backends: Vec<Proc> = [2, 3, 4, 5].iter().map(|&l| backend_on(ip(l), port)).collect();
    let dns = Dns::start(Answer::Addrs(vec![ip(2), ip(3), ip(4)]));
    let p = Proxy::start(&format!(
        "{}[services.app]\nkind = \"replicated\"\nendpoints = [{{ address = \"app.test:{port}\" }}]\n\
         dns = {{ resolver = \"{}\", min_ttl = \"1s\", max_ttl = \"2s\", max_stale = \"3s\" }}\n",
        route_all("app"),
        dns.addr
    ));
    let at = |l: u8| format!("127.0.0.{l}:{port}");
    eventually(10, "the pool is the name's three addresses", || endpoints(&p) == [at(2), at(3), at(4)]);
    let served: std::collections::HashSet<String> = (0..9).map(|_| p.get("/").backend()).collect();
    assert_eq!(served.len(), 3, "{served:?}");

    // NXDOMAIN, SERVFAIL, an empty answer: each held, the three keep serving.
    for (answer, reason) in [(Answer::NxDomain, "nxdomain"), (Answer::ServFail, "resolver_failed"), (Answer::Empty, "empty")] {
        dns.tell(answer);
        eventually(15, reason, || holds(&p, reason) >= 1.0);
        assert_eq!(endpoints(&p), [at(2), at(3), at(4)], "{reason}: the last known set serves");
        assert!((0..6).all(|_| p.get("/").status == 200));
    }
    eventually(5, "the hold's age is shown", || p.metric("ringmaster_discovery_held_seconds{pool=\"app\"}") >= 1.0);

    // Two of three gone at once (more than max_drop): held, then applied after max_stale.
    dns.tell(Answer::Addrs(vec![ip(2), ip(5)]));
    eventually(10, "a large drop is held", || holds(&p, "max_drop") >= 1.0);
    assert_eq!(endpoints(&p), [at(2), at(3), at(4)]);
    eventually(15, "applied after max_stale", || endpoints(&p) == [at(2), at(5)]);
    // A small change goes through at once.
    dns.tell(Answer::Addrs(vec![ip(2), ip(5), ip(3)]));
    eventually(10, "an added address", || endpoints(&p) == [at(2), at(3), at(5)]);
    let pools = p.admin_json("/admin/pools");
    let listed: Vec<&str> = pools["pools"][0]["endpoints"].as_array().unwrap().iter().map(|e| e["address"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 3, "{pools}");
    assert!(p.metric("ringmaster_discovery_updates_total{pool=\"app\"}") >= 3.0);
    assert_eq!(p.metric("ringmaster_reloads_total"), 0.0, "pool updates, not reloads");
}

#[test]
fn dns_without_a_named_endpoint_or_with_a_bad_resolver_is_a_config_error() {
    let (passed, err) = check_config(&format!(
        "{}[services.app]\nkind = \"replicated\"\nendpoints = [{{ address = \"127.0.0.1:80\" }}]\ndns = {{ resolver = \"nowhere\", max_drop = 2.0 }}\n",
        route_all("app")
    ));
    assert!(!passed, "{err}");
    for said in ["not a resolver address", "max_drop", "no endpoint is given by a name"] {
        assert!(err.contains(said), "{said}: {err}");
    }
}

/// An SRV name makes the whole pool: its targets on their ports, asked
/// again at the TTL, with no endpoint in the config.
#[test]
fn an_srv_name_makes_a_whole_pool() {
    let (b1, b2, b3) = (backend("b1"), backend("b2"), backend("b3"));
    let dns = Dns::start(Answer::Addrs(vec![Ipv4Addr::LOCALHOST]));
    *dns.srv.lock().unwrap() = vec![("host.test.".into(), b1.addr.port()), ("host.test.".into(), b2.addr.port())];
    let p = Proxy::start(&format!(
        "{}[services.app]\nkind = \"replicated\"\ndns = {{ srv = \"_http._tcp.app.test\", resolver = \"{}\", min_ttl = \"1s\", max_ttl = \"2s\" }}\n",
        route_all("app"),
        dns.addr
    ));
    let mut want = vec![b1.addr.to_string(), b2.addr.to_string()];
    want.sort();
    eventually(10, "the SRV targets are the pool", || endpoints(&p) == want);
    let served: std::collections::HashSet<String> = (0..6).map(|_| p.get("/").backend()).collect();
    assert_eq!(served, ["b1".to_string(), "b2".to_string()].into_iter().collect());
    dns.srv.lock().unwrap().push(("host.test.".into(), b3.addr.port()));
    want.push(b3.addr.to_string());
    want.sort();
    eventually(10, "a third target", || endpoints(&p) == want);
    assert!(p.admin_json("/admin/discovery")["pools"]["app"]["names"][0].as_str().unwrap().starts_with("SRV _http._tcp.app.test"));
}
