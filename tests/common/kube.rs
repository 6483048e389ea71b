//! A small fake Kubernetes API server for the tests (no kube-apiserver runs
//! here): the `scale` subresource of StatefulSets and Deployments, the HPA
//! list, and coordination.k8s.io Leases, with resourceVersion compare-and-set
//! as the real one does (a stale write gets 409). Every request is logged.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
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
}

fn serve(c: TcpStream, st: &Mutex<State>) {
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
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, answer) = answer(st, &method, &path, &body);
    st.lock().unwrap().log.push((method, path, body));
    let text = answer.to_string();
    let mut c = c;
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
