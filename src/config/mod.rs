//! The config: one TOML file, parsed with positions, then checked and
//! converted in one pass into a [`Plan`] (typed values, files read once); a
//! separate build step makes the immutable snapshot that requests read.

pub mod build;
mod check;
pub mod duration;
pub mod error;
pub mod import;
pub mod overlay;
pub mod plan;
pub mod pools;
pub mod schema;

pub use build::{build, Built, Snapshot};
pub use error::{ConfigError, Diagnostic};
pub use plan::Plan;
pub use schema::Config;

use error::Reporter;
use std::path::Path;

/// Reads, parses, checks and converts the config file at `path`.
pub fn load(path: &Path) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    parse(&path.display().to_string(), &text)
}

/// Parses, checks and converts config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<Plan, ConfigError> {
    let mut r = Reporter::new(file, text);
    let cfg: Config = match toml::from_str(text) {
        Ok(c) => c,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            let hint = if msg.starts_with("unknown field") {
                "remove the key or correct its spelling"
            } else if msg.starts_with("unknown variant") {
                "use one of the values listed"
            } else if msg.starts_with("missing field") {
                "add the missing key to this table"
            } else {
                ""
            };
            r.error(span, msg, hint);
            return Err(ConfigError::Invalid(r.found));
        }
    };
    let mut cfg = cfg;
    if let Some(path) = cfg.identity.keys_file.clone() {
        match std::fs::read_to_string(path.get_ref()) {
            Ok(keys_text) => match toml::from_str::<schema::KeysFile>(&keys_text) {
                Ok(f) => cfg.identity.keys.extend(f.keys),
                Err(e) => {
                    // Report the problem at its place in the keys file.
                    let mut kr = Reporter::new(path.get_ref(), &keys_text);
                    kr.error(
                        e.span().unwrap_or(0..0),
                        e.message().trim().to_string(),
                        "each entry is a [[keys]] table with key or sha256, tier and owner",
                    );
                    r.extend(kr);
                }
            },
            Err(e) => {
                r.error(path.span(), format!("cannot read API keys file {}: {e}", path.get_ref()), "check the path and its permissions")
            }
        }
    }
    let plan = check::plan(cfg, &mut r);
    let warnings = r.finish()?;
    plan.map(|p| Plan { warnings, ..p }).ok_or_else(|| {
        // Unreachable by the rule that a check returns nothing only after reporting why;
        // should that rule be broken, the config is refused, and says so.
        ConfigError::Invalid(vec![Diagnostic {
            file: file.to_string(),
            line: 1,
            col: 1,
            message: "the config could not be converted, and no check said why (a bug in ringmaster)".into(),
            hint: Some("please report it with the config".into()),
        }])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[listeners]]
name = "main"
listen = "127.0.0.1:8080"

[[routes]]
service = "app"

[services.app]
kind = "replicated"
endpoints = [{ address = "127.0.0.1:9001" }, { address = "localhost:9002", weight = 2 }]
"#;

    #[test]
    fn accepts_a_minimal_config() {
        let c = parse("t.toml", GOOD).unwrap();
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0].pools[0].endpoints.len(), 2);
    }

    #[test]
    fn side_effects_wait_for_the_build_step() {
        let log = std::env::temp_dir().join(format!("ringmaster-build-step-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let with_log = format!("[access_log]\npath = \"{}\"\n{GOOD}", log.display());
        let bad = with_log.replace("127.0.0.1:9001", "127.0.0.1");
        assert!(parse("t.toml", &bad).is_err());
        let plan = parse("t.toml", &with_log).unwrap();
        assert!(!log.exists(), "checking a config opened its access log");
        let built = build(plan, None);
        assert!(log.exists(), "the build step opens the access log");
        assert!(built.snapshot.access_log.is_some());
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn unknown_key_has_position() {
        let text = GOOD.replace("kind = \"replicated\"", "kind = \"replicated\"\nbalancr = \"random\"");
        let e = parse("t.toml", &text).unwrap_err();
        let d = &e.diagnostics()[0];
        assert_eq!((d.line, d.col), (11, 1), "{e}");
        assert!(d.message.contains("unknown field `balancr`"), "{e}");
    }

    #[test]
    fn reports_every_semantic_error() {
        let text = r#"
[[listeners]]
name = "main"
listen = "not-an-address"

[[routes]]
service = "nope"
methods = ["G ET"]

[services.app]
kind = "replicated"
timeouts = { connect = "5s", request = "1s" }
endpoints = [{ address = "127.0.0.1" }, { address = "127.0.0.1:9001", name = "a" }, { address = "127.0.0.1:9002", name = "a" }]
"#;
        let e = parse("t.toml", text).unwrap_err();
        let lines: Vec<String> = e.diagnostics().iter().map(|d| format!("{}:{}: {}", d.line, d.col, d.message)).collect();
        let all = lines.join("\n");
        assert!(all.contains("4:10: `not-an-address` is not a valid listen address"), "{all}");
        assert!(all.contains("7:11: route sends to service `nope`"), "{all}");
        assert!(all.contains("`G ET` is not an HTTP method"), "{all}");
        assert!(all.contains("has no port"), "{all}");
        assert!(all.contains("endpoint name `a` is used twice"), "{all}");
        assert!(all.contains("connect timeout 5s is longer than request timeout 1s"), "{all}");
        assert_eq!(lines.len(), 6, "{all}");
    }

    #[test]
    fn bad_duration_has_position() {
        let text = GOOD.replace("kind = \"replicated\"", "kind = \"replicated\"\ntimeouts = { connect = \"5 parsecs\" }");
        let e = parse("t.toml", &text).unwrap_err();
        let d = &e.diagnostics()[0];
        assert_eq!((d.line, d.col), (11, 24), "{e}");
        assert!(d.message.contains("not a duration unit"), "{e}");
    }
}

#[cfg(test)]
mod sharded_tests {
    use super::*;

    fn errors(text: &str) -> String {
        let base = "[[listeners]]\nname = \"main\"\nlisten = \"127.0.0.1:8080\"\n\n";
        match parse("t.toml", &format!("{base}{text}")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn header_names_and_values_are_checked_where_they_are_written() {
        let e = errors("[identity]\napi_key = { header = \"x api key\" }\n");
        assert!(e.contains("t.toml:6:22: `x api key` is not a header name"), "{e}");
        let e = errors(
            "[[listeners]]\nname = \"tls\"\nlisten = \"127.0.0.1:8443\"\nprotocol = \"https\"\nhsts = \"max-age=1\\u0001\"\ntls = { certificates = [] }\n",
        );
        assert!(e.contains("t.toml:9:8: an HSTS value starts with max-age= and holds only printable text"), "{e}");
    }

    #[test]
    fn sharded_service_checks() {
        let e = errors("[services.s]\nkind = \"sharded\"\n");
        assert!(e.contains("has no shards") && e.contains("has no sharder"), "{e}");
        let e = errors(
            "[services.s]\nkind = \"sharded\"\nsharder = { key = \"client_ip\", function = \"jump\", hash_tag = \"{\" }\nshard_header = \"bad header\"\nfan_out = { concurrency = 0 }\n[services.s.shards.a]\nweight = 2\nendpoints = [{ address = \"127.0.0.1:1\" }]\n",
        );
        assert!(e.contains("jump hashing does not support weights"), "{e}");
        assert!(e.contains("hash_tag `{` must be two characters"), "{e}");
        assert!(e.contains("`bad header` is not a valid header name"), "{e}");
        assert!(e.contains("fan-out concurrency must be at least 1"), "{e}");
        let e = errors("[services.s]\nkind = \"replicated\"\nsharder = { key = \"host\" }\nendpoints = [{ address = \"127.0.0.1:1\" }]\n");
        assert!(e.contains("replicated service `s` has a sharder"), "{e}");
        let e = errors("[[routes]]\nservice = \"s\"\nfan_out = true\n[services.s]\nkind = \"replicated\"\n");
        assert!(e.contains("route fans out to `s`, which is not sharded"), "{e}");
        let ok = errors("[services.s]\nkind = \"sharded\"\nsharder = { key = { header = \"x-user\" }, fallback = \"all\" }\n[services.s.shards.a]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n");
        assert_eq!(ok, "");
    }

    #[test]
    fn fallback_all_on_a_public_listener_is_a_warning() {
        let svc = "[[routes]]\nservice = \"s\"\n[services.s]\nkind = \"sharded\"\nsharder = { key = { header = \"x-user\" }, fallback = \"all\" }\n[services.s.shards.a]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n";
        let public = format!("[[listeners]]\nname = \"pub\"\nlisten = \"0.0.0.0:8080\"\n\n{svc}");
        let plan = parse("t.toml", &public).unwrap();
        let w: Vec<String> = plan.warnings.iter().map(|d| d.to_string()).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("t.toml:9:53: fallback `all` sends a request without the key to every shard of `s`, and listener `pub`"),
            "{w:?}"
        );
        let private = format!("[[listeners]]\nname = \"lo\"\nlisten = \"127.0.0.1:8080\"\n\n{svc}");
        assert!(parse("t.toml", &private).unwrap().warnings.is_empty());
    }

    #[test]
    fn fan_outs_in_flight_are_carried_over_a_reload_while_the_cap_is_unchanged() {
        let cfg = |cap: usize| {
            format!("[[listeners]]\nname = \"lo\"\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nservice = \"s\"\n[services.s]\nkind = \"sharded\"\nsharder = {{ key = {{ header = \"x-user\" }} }}\nfan_out = {{ max_in_flight = {cap} }}\n[services.s.shards.a]\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n")
        };
        let permits = |snap: &Snapshot| snap.services["s"].sharding.as_ref().unwrap().fan_out.in_flight.clone();
        let first = build(parse("t.toml", &cfg(4)).unwrap(), None).snapshot;
        let same = build(parse("t.toml", &cfg(4)).unwrap(), Some(&first)).snapshot;
        assert!(std::sync::Arc::ptr_eq(&permits(&first), &permits(&same)));
        let other = build(parse("t.toml", &cfg(8)).unwrap(), Some(&same)).snapshot;
        assert!(!std::sync::Arc::ptr_eq(&permits(&same), &permits(&other)));
        assert_eq!(permits(&other).available_permits(), 8);
    }

    #[test]
    fn hardening_settings_are_checked_where_they_are_written() {
        let e = errors("[admin]\nlisten = \"127.0.0.1:9901\"\ntoken_file = \"/nonexistent/token\"\n");
        assert!(e.contains("t.toml:7:14: cannot read admin.token file /nonexistent/token"), "{e}");
        let e = errors("[admin]\ntoken = \" \"\n");
        assert!(e.contains("t.toml:6:9: admin.token is empty"), "{e}");
        let svc = "[services.s]\nkind = \"replicated\"\nendpoints = [{ address = \"127.0.0.1:1\" }]\n";
        let e = errors(&format!("{svc}passive = {{ max_ejection_percent = 101 }}\ntimeouts = {{ queue = \"0s\" }}\n"));
        assert!(e.contains("max_ejection_percent must be between 0 and 100"), "{e}");
        assert!(e.contains("a timeout of zero would fail every request"), "{e}");
        let e = errors(&format!("[[routes]]\nservice = \"s\"\ncache = {{ max_variants = 0, targeted_field = \"bad field\" }}\n{svc}"));
        assert!(e.contains("max_variants must be between 1 and 1024"), "{e}");
        assert!(e.contains("`bad field` is not a header name"), "{e}");
        let e = errors("[services.s]\nkind = \"sharded\"\nsharder = { key = \"host\" }\nfan_out = { max_in_flight = 0 }\n[services.s.shards.a]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n");
        assert!(e.contains("max_in_flight of 0 would refuse every fan-out"), "{e}");
    }

    #[test]
    fn affinity_balancer_checks() {
        let e = errors("[services.s]\nkind = \"replicated\"\nhash = { balance_factor = 0.5, fallback = \"all\" }\nendpoints = [{ address = \"127.0.0.1:1\" }]\n");
        assert!(e.contains("has hash settings but its balancer is not `hash`"), "{e}");
        assert!(e.contains("balance_factor 0.5 is below 1"), "{e}");
        assert!(e.contains("fallback `all` fans a request out"), "{e}");
        let e = errors("[services.s]\nkind = \"replicated\"\nbalancer = \"cookie\"\ncookie = { name = \"a b\" }\nendpoints = [{ address = \"127.0.0.1:1\" }]\n");
        assert!(e.contains("`a b` is not a valid cookie name"), "{e}");
    }
}

#[cfg(test)]
mod read_once_tests;
