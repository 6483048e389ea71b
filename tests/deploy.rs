//! deploy/kubernetes: every manifest parses into the `k8s-openapi` types with
//! no field those types do not know (parsed, written back, and compared), the
//! topology is the one the README draws, and `ringmaster check` accepts the
//! configs the ConfigMaps carry.

mod common;
use k8s_openapi::api::{apps, autoscaling, core, rbac};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn manifests() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = Vec::new();
    for d in [dir.clone(), dir.join("hpa")] {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.clone(), v));
            }
        }
    }
    docs
}

/// Parses `v` as `T` and writes it back: anything `T` does not know is lost, and the two differ.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(file: &Path, v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let back = serde_json::to_value(&t).unwrap();
    assert_eq!(&back, v, "{}: a field the Kubernetes types do not know (or a wrong type)", file.display());
    t
}

#[test]
fn every_manifest_is_a_kubernetes_object_with_no_unknown_fields() {
    let docs = manifests();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let (mut root_replicas, mut statefulsets, mut hpas, mut lease_rule, mut slices_rule) = (0, Vec::new(), Vec::new(), false, false);
    for (file, v) in &docs {
        let kind = v["kind"].as_str().unwrap_or_else(|| panic!("{}: no kind", file.display())).to_string();
        *kinds.entry(kind.clone()).or_default() += 1;
        match kind.as_str() {
            "Namespace" => drop(typed::<core::v1::Namespace>(file, v)),
            "Secret" => drop(typed::<core::v1::Secret>(file, v)),
            "ConfigMap" => drop(typed::<core::v1::ConfigMap>(file, v)),
            "Service" => drop(typed::<core::v1::Service>(file, v)),
            "ServiceAccount" => drop(typed::<core::v1::ServiceAccount>(file, v)),
            "Deployment" => {
                let d = typed::<apps::v1::Deployment>(file, v);
                if d.metadata.name.as_deref() == Some("ringmaster-root") {
                    let spec = d.spec.unwrap();
                    root_replicas = spec.replicas.unwrap();
                    let c = &spec.template.spec.unwrap().containers[0];
                    let probe = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
                    assert_eq!(probe.path.as_deref(), Some("/readyz"));
                }
            }
            "StatefulSet" => statefulsets.push(typed::<apps::v1::StatefulSet>(file, v).metadata.name.unwrap()),
            "HorizontalPodAutoscaler" => {
                let h = typed::<autoscaling::v2::HorizontalPodAutoscaler>(file, v);
                hpas.push(h.spec.unwrap().scale_target_ref.name);
            }
            "Role" => {
                let r = typed::<rbac::v1::Role>(file, v);
                for rule in r.rules.unwrap_or_default() {
                    let groups = rule.api_groups.unwrap_or_default();
                    let res = rule.resources.unwrap_or_default();
                    lease_rule |= groups.iter().any(|g| g == "coordination.k8s.io") && res.iter().any(|r| r == "leases");
                    slices_rule |= groups.iter().any(|g| g == "discovery.k8s.io") && res.iter().any(|r| r == "endpointslices");
                }
            }
            "RoleBinding" => drop(typed::<rbac::v1::RoleBinding>(file, v)),
            other => panic!("{}: a kind this test does not check: {other}", file.display()),
        }
    }
    assert!(root_replicas >= 2, "a replicated root: {root_replicas}");
    statefulsets.sort();
    hpas.sort();
    assert_eq!(statefulsets, ["cache-a", "cache-b", "cache-c"], "one StatefulSet per shard");
    assert_eq!(hpas, statefulsets, "an HPA per shard");
    assert!(lease_rule && slices_rule, "RBAC for the Lease and for EndpointSlices");
    assert!(kinds.contains_key("Secret") && kinds.contains_key("Namespace"), "{kinds:?}");
}

#[test]
#[cfg_attr(not(feature = "kubernetes"), ignore = "the root's shards use Kubernetes discovery: run with --features kubernetes")]
fn ringmaster_check_accepts_the_configmaps_configs() {
    let dir = tempfile::tempdir().unwrap();
    // The admin token is a Secret mounted in the pod; here a file stands in for it.
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token-for-the-check").unwrap();
    let mut checked = 0;
    for (file, v) in manifests().into_iter().filter(|(_, v)| v["kind"] == "ConfigMap") {
        let text = v["data"]["ringmaster.toml"].as_str().unwrap_or_else(|| panic!("{}: no ringmaster.toml", file.display()));
        let path = dir.path().join(format!("{}.toml", v["metadata"]["name"].as_str().unwrap()));
        std::fs::write(&path, text.replace("/etc/ringmaster-admin/token", token.to_str().unwrap())).unwrap();
        // As in a pod: the API server's address comes from the environment Kubernetes sets.
        let out = std::process::Command::new(common::BIN)
            .args(["check", "--config", path.to_str().unwrap()])
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
        checked += 1;
    }
    assert_eq!(checked, 2, "the root's and the caches' configs");
}
