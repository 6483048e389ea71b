//! A small fake Kubernetes API server for the tests (no kube-apiserver runs
//! here): the `scale` subresource of StatefulSets and Deployments, the HPA
//! list, and coordination.k8s.io Leases, with resourceVersion compare-and-set
//! as the real one does (a stale write gets 409); and discovery.k8s.io
//! EndpointSlices, listed and watched (a chunked stream of events), with a
//! 410 on cue, changes made without telling the watches, and an outage.
//! Every request is logged.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct State {
    /// Objects by path (a workload's scale by its `.../scale` path).
    pub objects: HashMap<String, Value>,
    pub hpas: Vec<Value>,
    /// (method, path, body) of every request.
    pub log: Vec<(String, String, Value)>,
    /// Paths whose next write is refused as a conflict (someone else wrote first).
    pub conflict_once: Vec<String>,
    /// (path, n): right after the n-th GET of path is answered, someone else
    /// writes the object (its resourceVersion moves on), once.
    pub touch_after_get: Vec<(String, usize)>,
    /// (path, HPA): when a write to path is refused as a conflict, the HPA
    /// appears (added by someone else meanwhile).
    pub hpa_on_conflict: Vec<(String, Value)>,
    /// EndpointSlices by name.
    pub slices: BTreeMap<String, Value>,
    /// Open watches: an event to send, or `None` to end the stream.
    watches: Vec<Sender<Option<Value>>>,
    /// Watches from a version at or below this get 410 Gone.
    compacted: u64,
    /// The API server is down: every connection is closed unanswered.
    pub down: bool,
    /// The Authorization field of every request.
    pub auth: Vec<String>,
    version: u64,
}

impl State {
    fn next(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }
}

pub struct FakeKube {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

pub fn scale_path(kind: &str, name: &str) -> String {
    format!("/apis/apps/v1/namespaces/default/{kind}/{name}/scale")
}

impl FakeKube {
    pub fn start() -> FakeKube {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                let st = st.clone();
                std::thread::spawn(move || serve(c, &st));
            }
        });
        FakeKube { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A workload (`statefulsets` or `deployments`) with `replicas`.
    pub fn workload(&self, kind: &str, name: &str, replicas: u64) {
        let mut s = self.state.lock().unwrap();
        let rv = s.next();
        let scale = json!({ "kind": "Scale", "metadata": { "name": name, "namespace": "default", "resourceVersion": rv },
            "spec": { "replicas": replicas }, "status": { "replicas": replicas } });
        s.objects.insert(scale_path(kind, name), scale);
    }

    /// An HPA that targets `kind`/`name`.
    pub fn hpa(&self, name: &str, kind: &str, target: &str) {
        let h = json!({ "metadata": { "name": name }, "spec": { "scaleTargetRef": { "kind": kind, "name": target } } });
        self.state.lock().unwrap().hpas.push(h);
    }

    /// Someone else changes the object: its resourceVersion moves on.
    pub fn touch(&self, path: &str) {
        let mut s = self.state.lock().unwrap();
        let rv = s.next();
        if let Some(o) = s.objects.get_mut(path) {
            o["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    pub fn replicas(&self, kind: &str, name: &str) -> u64 {
        self.state.lock().unwrap().objects[&scale_path(kind, name)]["spec"]["replicas"].as_u64().unwrap()
    }

    pub fn writes(&self, path: &str) -> Vec<Value> {
        self.state.lock().unwrap().log.iter().filter(|(m, p, _)| m != "GET" && p == path).map(|e| e.2.clone()).collect()
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    /// Creates or replaces an EndpointSlice and tells the watches, or not
    /// (`quietly`: a change only a list shows).
    pub fn slice(&self, mut slice: Value, quietly: bool) {
        let mut s = self.state.lock().unwrap();
        let name = slice["metadata"]["name"].as_str().unwrap().to_string();
        slice["apiVersion"] = json!("discovery.k8s.io/v1");
        slice["kind"] = json!("EndpointSlice");
        slice["metadata"]["resourceVersion"] = json!(s.next());
        let kind = if s.slices.contains_key(&name) { "MODIFIED" } else { "ADDED" };
        s.slices.insert(name, slice.clone());
        if !quietly {
            s.tell(json!({ "type": kind, "object": slice }));
        }
    }

    pub fn delete_slice(&self, name: &str) {
        let mut s = self.state.lock().unwrap();
        if let Some(mut slice) = s.slices.remove(name) {
            slice["metadata"]["resourceVersion"] = json!(s.next());
            s.tell(json!({ "type": "DELETED", "object": slice }));
        }
    }

    /// The server forgets every version so far: open watches get a 410
    /// ERROR event and end, as after an etcd compaction.
    pub fn expire(&self) {
        let mut s = self.state.lock().unwrap();
        s.compacted = s.version;
        let gone = json!({ "type": "ERROR", "object": { "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "too old resource version", "reason": "Expired", "code": 410 } });
        s.tell(gone);
        s.end_watches();
    }

    /// Takes the API server down (open watches end, connections are
    /// closed unanswered) or brings it back.
    pub fn set_down(&self, down: bool) {
        let mut s = self.state.lock().unwrap();
        s.down = down;
        if down {
            s.end_watches();
        }
    }

    /// How many times the slices were listed.
    pub fn slice_lists(&self) -> usize {
        self.state
            .lock()
            .unwrap()
            .log
            .iter()
            .filter(|(m, p, _)| m == "GET" && p.contains("/endpointslices?") && !p.contains("watch="))
            .count()
    }
}

/// An EndpointSlice of `service` with one port and endpoints given as
/// (IP, ready, serving, terminating).
pub fn endpoint_slice(name: &str, labels: Value, port: (&str, u16), endpoints: &[(&str, bool, bool, bool)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, ready, serving, terminating)| {
            json!({ "addresses": [ip], "conditions": { "ready": ready, "serving": serving, "terminating": terminating } })
        })
        .collect();
    json!({ "metadata": { "name": name, "namespace": "default", "labels": labels }, "addressType": "IPv4",
        "ports": [{ "name": port.0, "port": port.1, "protocol": "TCP" }], "endpoints": eps })
}

impl State {
    fn tell(&mut self, event: Value) {
        self.watches.retain(|w| w.send(Some(event.clone())).is_ok());
    }

    fn end_watches(&mut self) {
        for w in self.watches.drain(..) {
            let _ = w.send(None);
        }
    }
}

/// `k=v,k2=v2` selects `labels`.
fn selects(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => labels.get(k).and_then(Value::as_str) == Some(v),
        None => false,
    })
}

/// A list or a watch of EndpointSlices; whether it was answered here.
fn slices(c: &mut TcpStream, st: &Mutex<State>, path: &str) -> bool {
    let Some((base, query)) = path.split_once('?') else { return false };
    if !base.ends_with("/endpointslices") {
        return false;
    }
    let q: HashMap<String, String> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    let mut s = st.lock().unwrap();
    s.log.push(("GET".into(), path.to_string(), Value::Null));
    if q.get("watch").map(String::as_str) != Some("true") {
        let items: Vec<&Value> = s.slices.values().filter(|v| selects(&selector, &v["metadata"]["labels"])).collect();
        let text = json!({ "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
            "metadata": { "resourceVersion": s.version.to_string() }, "items": items })
        .to_string();
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
            text.len()
        );
        return true;
    }
    let from: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let (tx, rx) = channel();
    if from <= s.compacted && s.compacted > 0 {
        let _ = tx.send(Some(json!({ "type": "ERROR", "object": { "kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version" } })));
        let _ = tx.send(None);
    } else {
        s.watches.push(tx);
    }
    drop(s);
    let _ = write!(c, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    while let Ok(Some(event)) = rx.recv() {
        if event["type"] != "ERROR" && !selects(&selector, &event["object"]["metadata"]["labels"]) {
            continue;
        }
        let line = format!("{event}\n");
        if write!(c, "{:x}\r\n{line}\r\n", line.len()).is_err() {
            return true;
        }
    }
    let _ = write!(c, "0\r\n\r\n");
    true
}

fn serve(mut c: TcpStream, st: &Mutex<State>) {
    if st.lock().unwrap().down {
        return;
    }
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or("").to_string(), words.next().unwrap_or("").to_string());
    let mut len = 0;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            if k.eq_ignore_ascii_case("authorization") {
                st.lock().unwrap().auth.push(v.trim().to_string());
            }
        }
    }
    if method == "GET" && slices(&mut c, st, &path) {
        return;
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = answer(st, &method, &path, &body);
    st.lock().unwrap().log.push((method, path, body));
    let text = answer.to_string();
    let _ = write!(
        c,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn answer(st: &Mutex<State>, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let mut s = st.lock().unwrap();
    let missing = json!({ "kind": "Status", "message": format!("{path} not found"), "code": 404 });
    if path.ends_with("/horizontalpodautoscalers") {
        return (200, json!({ "items": s.hpas }));
    }
    match method {
        "GET" => {
            let answer = s.objects.get(path).map_or((404, missing), |o| (200, o.clone()));
            let gets = s.log.iter().filter(|(m, p, _)| m == "GET" && p == path).count() + 1;
            if let Some(i) = s.touch_after_get.iter().position(|(p, n)| p == path && *n == gets) {
                s.touch_after_get.remove(i);
                let rv = s.next();
                if let Some(o) = s.objects.get_mut(path) {
                    o["metadata"]["resourceVersion"] = json!(rv);
                }
            }
            answer
        }
        "POST" => {
            let at = format!("{path}/{}", body["metadata"]["name"].as_str().unwrap_or(""));
            if s.objects.contains_key(&at) {
                return (409, json!({ "message": "already exists" }));
            }
            let mut o = body.clone();
            o["metadata"]["resourceVersion"] = json!(s.next());
            s.objects.insert(at, o.clone());
            (201, o)
        }
        "PUT" if s.conflict_once.contains(&path.to_string()) => {
            s.conflict_once.retain(|p| p != path);
            (409, json!({ "message": "the object has been modified; please apply your changes to the latest version" }))
        }
        "PUT" => {
            let Some(now) = s.objects.get(path).map(|o| o["metadata"]["resourceVersion"].clone()) else { return (404, missing) };
            if body["metadata"]["resourceVersion"] != now {
                if let Some(i) = s.hpa_on_conflict.iter().position(|(p, _)| p == path) {
                    let (_, hpa) = s.hpa_on_conflict.remove(i);
                    s.hpas.push(hpa);
                }
                return (409, json!({ "message": "the object has been modified; please apply your changes to the latest version" }));
            }
            let rv = s.next();
            let o = s.objects.get_mut(path).unwrap();
            if path.ends_with("/scale") {
                o["spec"]["replicas"] = body["spec"]["replicas"].clone();
            } else {
                *o = body.clone();
            }
            o["metadata"]["resourceVersion"] = json!(rv);
            (200, o.clone())
        }
        _ => (405, json!({ "message": "method not allowed" })),
    }
}
