//! The Kubernetes side of scaling, against a fake API server (no
//! kube-apiserver runs here): the `kubernetes` scaler back-end scales each
//! shard's StatefulSet by compare-and-set on its scale subresource, trying
//! again after a conflict, and leaves an object an HPA owns alone; a
//! coordination.k8s.io Lease elects one root, and another takes over when
//! the leader dies.

mod common;
use common::kube::{scale_path, FakeKube};
use common::*;

fn shard<'a>(heat: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    heat["services"][0]["shards"].as_array().unwrap().iter().find(|s| s["shard"] == name).unwrap()
}

#[test]
fn each_shard_is_scaled_by_compare_and_set_and_an_hpas_object_is_left_alone() {
    let kube = FakeKube::start();
    kube.workload("statefulsets", "users-a", 1);
    kube.workload("statefulsets", "users-b", 1);
    kube.hpa("users-b", "StatefulSet", "users-b");
    let a_path = scale_path("statefulsets", "users-a");
    kube.state.lock().unwrap().conflict_once.push(a_path.clone());
    let (a, b) = (backend("a1"), backend("b1"));
    // min_replicas = 2: each shard is below it from the first tick.
    let p = Proxy::start(&format!(
        "[[routes]]\nservice = \"users\"\n\n\
         [services.users]\nkind = \"sharded\"\nsharder = {{ key = {{ path_segment = 1 }} }}\n\n\
         [services.users.scaler]\ntarget = 1000\nmin_replicas = 2\nmax_replicas = 4\ncooldown = \"0s\"\n\
         kubernetes = {{ object = \"statefulset/{{service}}-{{shard}}\", api_server = \"{}\", namespace = \"default\" }}\n\n\
         [services.users.shards.a]\nendpoints = [{{ address = \"{}\" }}]\n\
         [services.users.shards.b]\nendpoints = [{{ address = \"{}\" }}]\n",
        kube.url(),
        a.addr,
        b.addr
    ));
    eventually(20, "users-a scaled to 2", || kube.replicas("statefulsets", "users-a") == 2);
    let writes = kube.writes(&a_path);
    assert!(writes.len() >= 2, "the refused write was tried again: {writes:?}");
    assert_eq!(writes[0]["spec"]["replicas"], 2);
    assert!(writes.iter().all(|w| w["metadata"]["resourceVersion"].is_string()), "every write names the version it read: {writes:?}");
    assert_eq!(p.metric("ringmaster_scaler_steps_total{service=\"users\",shard=\"a\",step=\"failed\"}"), 1.0);
    assert_eq!(p.metric("ringmaster_scaler_steps_total{service=\"users\",shard=\"a\",step=\"up\"}"), 1.0);
    // Two more seconds: the HPA's object is still never written.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(kube.writes(&scale_path("statefulsets", "users-b")).is_empty());
    assert_eq!(kube.replicas("statefulsets", "users-b"), 1);
    let b_path = scale_path("statefulsets", "users-b");
    let reads = kube.state.lock().unwrap().log.iter().filter(|(m, p, _)| m == "GET" && *p == b_path).count();
    assert_eq!(reads, 1, "a workload that does not change is read once per 15 s, not at every tick");
    let heat = p.admin_json("/admin/heat");
    assert_eq!(shard(&heat, "b")["scaler"]["reason"], "an HPA owns the workload: metrics only", "{heat:#}");
    assert_eq!(shard(&heat, "a")["scaler"]["current"], 2, "{heat:#}");
    // The workload is what counts as current: the pool's one endpoint is a Service in front of the pods.
    assert_eq!(shard(&heat, "a")["endpoints"].as_array().unwrap().len(), 1);
    assert_eq!(p.get("/users/x").status, 200);
}

#[test]
fn a_lease_elects_one_root_and_another_takes_over_when_it_dies() {
    let kube = FakeKube::start();
    let leader = |who: &str| {
        format!(
            "[leader]\nidentity = \"{who}\"\nttl = \"2s\"\nkubernetes = {{ lease = \"roots\", api_server = \"{}\", namespace = \"default\" }}\n",
            kube.url()
        )
    };
    let lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/roots";
    let first = Proxy::start(&leader("root-1"));
    eventually(10, "root-1 leads", || leads(first.admin));
    let second = Proxy::start(&leader("root-2"));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(leads(first.admin) && !leads(second.admin), "one leader at a time");
    assert_eq!(kube.get(lease).unwrap()["spec"]["holderIdentity"], "root-1");
    assert_eq!(second.metric("ringmaster_scaler_leader"), 0.0);
    // The leader dies without a word: root-2 takes over once the lease lapses (2 s, seen on its own clock).
    first.proc.signal("KILL");
    let died = std::time::Instant::now();
    eventually(10, "root-2 leads", || leads(second.admin));
    assert!(died.elapsed() >= std::time::Duration::from_millis(1500), "not before the lease lapsed: {:?}", died.elapsed());
    let l = kube.get(lease).unwrap();
    assert_eq!(l["spec"]["holderIdentity"], "root-2");
    assert_eq!(l["spec"]["leaseTransitions"], 1);
    // A leader that stops steps down: the holder is cleared for the next one.
    second.proc.signal("TERM");
    eventually(10, "root-2 released the lease", || kube.get(lease).unwrap()["spec"]["holderIdentity"].is_null());
}

/// Compare-and-set against an object that changes between the scaler's read
/// and its write: the write carrying the stale version gets 409, the retry
/// carries the version read again; and an HPA that appeared meanwhile is
/// respected (no second write).
#[test]
fn a_write_on_a_stale_version_is_retried_on_the_new_one_and_a_new_hpa_is_respected() {
    let kube = FakeKube::start();
    kube.workload("statefulsets", "users-a", 1);
    kube.workload("statefulsets", "users-b", 1);
    let (a_path, b_path) = (scale_path("statefulsets", "users-a"), scale_path("statefulsets", "users-b"));
    {
        let mut s = kube.state.lock().unwrap();
        // The decision's read is the first GET, the step's read (right before the write) the second.
        s.touch_after_get.push((a_path.clone(), 2));
        s.touch_after_get.push((b_path.clone(), 2));
        let hpa = serde_json::json!({ "metadata": { "name": "users-b" }, "spec": { "scaleTargetRef": { "kind": "StatefulSet", "name": "users-b" } } });
        s.hpa_on_conflict.push((b_path.clone(), hpa));
    }
    let (a, b) = (backend("a1"), backend("b1"));
    let p = Proxy::start(&format!(
        "[[routes]]\nservice = \"users\"\n\n\
         [services.users]\nkind = \"sharded\"\nsharder = {{ key = {{ path_segment = 1 }} }}\n\n\
         [services.users.scaler]\ntarget = 1000\nmin_replicas = 2\nmax_replicas = 4\ncooldown = \"0s\"\n\
         kubernetes = {{ object = \"statefulset/{{service}}-{{shard}}\", api_server = \"{}\", namespace = \"default\" }}\n\n\
         [services.users.shards.a]\nendpoints = [{{ address = \"{}\" }}]\n\
         [services.users.shards.b]\nendpoints = [{{ address = \"{}\" }}]\n",
        kube.url(),
        a.addr,
        b.addr
    ));
    eventually(20, "users-a scaled to 2", || kube.replicas("statefulsets", "users-a") == 2);
    let writes = kube.writes(&a_path);
    assert_eq!(writes.len(), 2, "{writes:?}");
    let (stale, fresh) = (&writes[0]["metadata"]["resourceVersion"], &writes[1]["metadata"]["resourceVersion"]);
    assert_ne!(stale, fresh, "the retry carries the version read again");
    let log = kube.state.lock().unwrap().log.clone();
    let last_read = log.iter().filter(|(m, path, _)| m == "GET" && *path == a_path).count();
    assert!(last_read >= 3, "the object was read again before the retry");
    // users-b: its write was refused and an HPA appeared meanwhile; it is never written again.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(kube.writes(&b_path).len(), 1, "{:?}", kube.writes(&b_path));
    assert_eq!(kube.replicas("statefulsets", "users-b"), 1);
    let heat = p.admin_json("/admin/heat");
    assert_eq!(shard(&heat, "b")["scaler"]["reason"], "an HPA owns the workload: metrics only", "{heat:#}");
}
