//! The replica phase driven in-process against stub endpoints (loopback
//! sockets that answer every command with a canned answer, or close, or
//! never answer): fail-over, the write policies, the repair log, cas at home.

use super::super::stub::{service, stub, Stub};
use super::*;

fn wire(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[tokio::test]
async fn a_read_fails_over_past_a_replica_that_closes() {
    let (bad, good) = (stub(Stub::Close).await, stub(Stub::Answer("VALUE k 0 1\r\nv\r\nEND\r\n")).await);
    let svc = service(&[bad, good], Writes::First, super::super::Reads::LocalFirst);
    let a = read(&svc, 0, wire("get k\r\n"), Expect::Values, 0, None, false).await;
    assert_eq!(a.unwrap(), wire("VALUE k 0 1\r\nv\r\nEND\r\n"));
    assert_eq!(svc.shards[0].stats.failovers.load(Relaxed), 1);
    assert_eq!(svc.shards[0].stats.hits.load(Relaxed), 1);
}

#[tokio::test]
async fn writes_answer_by_their_policy_and_log_what_a_replica_missed() {
    let ok = || stub(Stub::Answer("STORED\r\n"));
    let (a, b, dead) = (ok().await, ok().await, stub(Stub::Close).await);
    let key = wire("k");
    for (policy, want_ok) in [(Writes::Majority, true), (Writes::All, false), (Writes::First, true)] {
        let svc = service(&[a, b, dead], policy, super::super::Reads::RoundRobin);
        let got = write(&svc, 0, &wire("set k 0 0 1\r\nv\r\n"), Expect::Line, 0, Some(&key)).await;
        assert_eq!(got.as_ref().is_ok_and(|a| a == "STORED\r\n"), want_ok, "{policy:?}: {got:?}");
        // The dead replica's miss is logged even when the client was already answered.
        let dead_ep = &svc.shards[0].replicas[2];
        for _ in 0..50 {
            if dead_ep.stats.repair.owed() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(dead_ep.stats.repair.pending(), 1, "{policy:?}");
        assert!(!svc.shards[0].replicas[0].stats.repair.owed());
        assert!(!dead_ep.serves_reads(), "a replica owing a repair serves no reads");
    }
}

#[tokio::test]
async fn a_cas_goes_to_the_keys_home_and_a_replica_owing_repair_is_passed_over() {
    let ok = || stub(Stub::Answer("STORED\r\n"));
    let (a, b) = (ok().await, ok().await);
    let svc = service(&[a, b], Writes::First, super::super::Reads::RoundRobin);
    let sh = &svc.shards[0];
    let key = (0..).map(|i| Bytes::from(format!("k{i}"))).find(|k| sh.home(k) == 1).unwrap();
    let got = cas(&svc, 0, &wire("cas k 0 0 1 5\r\nv\r\n"), &wire("set k 0 0 1\r\nv\r\n"), Expect::Line, 0, &key).await;
    assert_eq!(got.unwrap(), wire("STORED\r\n"));
    assert_eq!(sh.replicas[1].stats.requests.load(Relaxed), 1, "the compare went to the key's home");
    // Home owes a repair (and stays owing: the stub fails the replay): the cas goes to the other.
    sh.replicas[1].stats.repair.log(&key);
    let before = sh.replicas[0].stats.requests.load(Relaxed);
    let got = cas(&svc, 0, &wire("cas k 0 0 1 5\r\nv\r\n"), &wire("set k 0 0 1\r\nv\r\n"), Expect::Line, 0, &key).await;
    assert_eq!(got.unwrap(), wire("STORED\r\n"));
    assert!(sh.replicas[0].stats.requests.load(Relaxed) > before);
}
