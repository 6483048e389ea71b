//! The `kubernetes` scaler back-end: each shard is a StatefulSet or a
//! Deployment, and scaling it is a compare-and-set on its `scale`
//! subresource (the resourceVersion read is the one written back, so a
//! concurrent change wins and this step is retried at the next tick). An
//! object an HPA targets is never scaled here: the HPA owns it, and
//! ringmaster only exports the per-shard heat it (or KEDA) can read.

use super::api::{refusal, Api};
use super::ScaleError;
use http::{Method, StatusCode};
use serde_json::json;

/// A cluster and the namespace ringmaster works in.
#[derive(Clone, Debug, PartialEq)]
pub struct Cluster {
    pub api: Api,
    pub namespace: String,
    /// The CA bundle `api` trusts, when not the system's.
    pub ca: Option<std::path::PathBuf>,
}

/// The back-end's settings (`kubernetes = { object = "...", ... }`).
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    pub cluster: Cluster,
    /// `statefulset/NAME` or `deployment/NAME`, with `{service}` and `{shard}` replaced.
    pub object: String,
}

/// A shard's workload as the API server has it.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// What is asked for (spec.replicas) and what runs (status.replicas).
    pub spec: usize,
    pub status: usize,
    pub resource_version: String,
    /// The HPA that targets the object, if one does.
    pub hpa: Option<String>,
}

/// `statefulset/NAME` -> (the resource path, its kind, the name).
pub fn parse_object(object: &str) -> Option<(&'static str, &'static str, &str)> {
    let (kind, name) = object.split_once('/')?;
    let (res, kind) = match kind.to_ascii_lowercase().as_str() {
        "statefulset" | "statefulsets" | "sts" => ("statefulsets", "StatefulSet"),
        "deployment" | "deployments" | "deploy" => ("deployments", "Deployment"),
        _ => return None,
    };
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'{' || b == b'}');
    ok.then_some((res, kind, name))
}

/// A shard name as a Kubernetes object name (lower case; other characters `-`).
fn dns_name(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

impl Scale {
    /// The object of one shard: (resource path, kind, name).
    pub fn object_of(&self, service: &str, shard: &str) -> (&'static str, &'static str, String) {
        let name = self.object.replace("{service}", &dns_name(service)).replace("{shard}", &dns_name(shard));
        let (res, kind, _) = parse_object(&self.object).unwrap_or(("statefulsets", "StatefulSet", ""));
        let name = name.split_once('/').map(|(_, n)| n.to_string()).unwrap_or(name);
        (res, kind, name)
    }

    fn path(&self, res: &str, name: &str) -> String {
        format!("/apis/apps/v1/namespaces/{}/{res}/{name}/scale", self.cluster.namespace)
    }

    /// Reads the shard's scale and whether an HPA owns it.
    pub async fn read(&self, service: &str, shard: &str) -> Result<Observed, ScaleError> {
        let (res, kind, name) = self.object_of(service, shard);
        let a = self.cluster.api.call(Method::GET, &self.path(res, &name), None).await?;
        if a.0 != StatusCode::OK {
            let what = format!("reading the scale of {kind} {}/{name}", self.cluster.namespace);
            return Err(ScaleError::Refused { what, refusal: refusal(&a) });
        }
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as usize;
        let rv = a.1["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string();
        let hpa = self.hpa_of(kind, &name).await?;
        Ok(Observed { spec: n(&a.1["spec"]["replicas"]), status: n(&a.1["status"]["replicas"]), resource_version: rv, hpa })
    }

    async fn hpa_of(&self, kind: &str, name: &str) -> Result<Option<String>, ScaleError> {
        let path = format!("/apis/autoscaling/v2/namespaces/{}/horizontalpodautoscalers", self.cluster.namespace);
        let a = self.cluster.api.call(Method::GET, &path, None).await?;
        if a.0 != StatusCode::OK {
            return Err(ScaleError::Refused { what: format!("listing the HPAs of {}", self.cluster.namespace), refusal: refusal(&a) });
        }
        let items = a.1["items"].as_array().cloned().unwrap_or_default();
        Ok(items.iter().find_map(|h| {
            let t = &h["spec"]["scaleTargetRef"];
            (t["kind"] == kind && t["name"] == name).then(|| h["metadata"]["name"].as_str().unwrap_or("?").to_string())
        }))
    }

    /// Asks for `replicas`, if the object is still at `resource_version`.
    pub async fn write(&self, service: &str, shard: &str, replicas: usize, resource_version: &str) -> Result<(), ScaleError> {
        let (res, kind, name) = self.object_of(service, shard);
        let body = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": { "name": name, "namespace": self.cluster.namespace, "resourceVersion": resource_version },
            "spec": { "replicas": replicas },
        });
        let a = self.cluster.api.call(Method::PUT, &self.path(res, &name), Some(&body)).await?;
        match a.0 {
            StatusCode::OK | StatusCode::CREATED => Ok(()),
            StatusCode::CONFLICT => Err(ScaleError::Conflict { kind: kind.to_string(), name }),
            _ => Err(ScaleError::Refused {
                what: format!("scaling {kind} {}/{name} to {replicas}", self.cluster.namespace),
                refusal: refusal(&a),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_named_from_the_template() {
        assert_eq!(parse_object("statefulset/users-{shard}"), Some(("statefulsets", "StatefulSet", "users-{shard}")));
        assert_eq!(parse_object("Deployment/x").map(|o| o.1), Some("Deployment"));
        assert_eq!(parse_object("pod/x"), None);
        assert_eq!(parse_object("statefulset/"), None);
        assert_eq!(parse_object("statefulset/a b"), None);
        let s = Scale {
            cluster: Cluster {
                api: Api {
                    base: "http://127.0.0.1:1".parse().unwrap(),
                    tls: None,
                    token: None,
                    timeout: std::time::Duration::from_secs(1),
                },
                namespace: "default".into(),
                ca: None,
            },
            object: "deployment/{service}-{shard}".into(),
        };
        assert_eq!(s.object_of("Users", "a_1"), ("deployments", "Deployment", "users-a-1".to_string()));
    }
}
