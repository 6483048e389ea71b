//! Bearer JWTs: HS256, RS256 and ES256; expired, not-yet-valid, wrong issuer
//! and forged tokens get 401; the tier claim picks the rate limits.

mod common;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use std::process::Command;

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let st = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is installed (scripts/test installs it)");
    assert!(st.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&st.stderr));
}

fn setup() -> (Proxy, Backend, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let d = keys.path();
    openssl(d, &["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ec.pem"]);
    openssl(d, &["pkcs8", "-topk8", "-nocrypt", "-in", "ec.pem", "-out", "ec8.pem"]);
    openssl(d, &["ec", "-in", "ec.pem", "-pubout", "-out", "ec.pub"]);
    openssl(d, &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"]);
    openssl(d, &["rsa", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub"]);
    let a = backend("a");
    let cfg = format!(
        r#"[identity]
jwt = {{ hs256_secret = "s3cret", rsa_public_key = "{rsa}", ec_public_key = "{ec}", issuer = "https://id.example", leeway = "0s" }}

[rate_limits.anon]
rate = 1
period = "1m"
[rate_limits.gold]
rate = 3
period = "1m"

[[routes]]
service = "app"
rate_limit_tiers = {{ anonymous = ["anon"], gold = ["gold"] }}

{svc}"#,
        rsa = d.join("rsa.pub").display(),
        ec = d.join("ec.pub").display(),
        svc = service("app", "round_robin", &[&a], "")
    );
    (Proxy::start(&cfg), a, keys)
}

fn token(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    encode(&Header::new(alg), &claims, key).unwrap()
}

fn call(p: &Proxy, token: &str) -> Response {
    request(p.addr, &format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"))
}

#[test]
fn bearer_tokens_of_each_algorithm() {
    let (p, _a, keys) = setup();
    let iss = "https://id.example";
    let hs = EncodingKey::from_secret(b"s3cret");
    let es = EncodingKey::from_ec_pem(&std::fs::read(keys.path().join("ec8.pem")).unwrap()).unwrap();
    let rs = EncodingKey::from_rsa_pem(&std::fs::read(keys.path().join("rsa.pem")).unwrap()).unwrap();
    let exp = now() + 600;
    // Each algorithm, the gold tier: 3 a minute per owner (sub).
    for (alg, key, sub) in [(Algorithm::HS256, &hs, "alice"), (Algorithm::ES256, &es, "bob"), (Algorithm::RS256, &rs, "carol")] {
        let t = token(alg, key, serde_json::json!({ "sub": sub, "tier": "gold", "iss": iss, "exp": exp }));
        let codes: Vec<u16> = (0..4).map(|_| call(&p, &t).status).collect();
        assert_eq!(codes, [200, 200, 200, 429], "{alg:?}");
        assert_eq!(call(&p, &t).json()["policy"], "gold");
    }
    // Refused: expired, not yet valid, wrong issuer, forged signature, unknown algorithm key.
    let bad = [
        token(Algorithm::HS256, &hs, serde_json::json!({ "sub": "x", "tier": "gold", "iss": iss, "exp": now() - 10 })),
        token(Algorithm::HS256, &hs, serde_json::json!({ "sub": "x", "tier": "gold", "iss": iss, "exp": exp, "nbf": now() + 300 })),
        token(Algorithm::HS256, &hs, serde_json::json!({ "sub": "x", "tier": "gold", "iss": "https://evil.example", "exp": exp })),
        token(
            Algorithm::HS256,
            &EncodingKey::from_secret(b"guess"),
            serde_json::json!({ "sub": "x", "tier": "gold", "iss": iss, "exp": exp }),
        ),
        "not.a.token".to_string(),
    ];
    for t in &bad {
        let r = call(&p, t);
        assert_eq!(r.status, 401, "{t}");
        assert!(r.json()["error"].as_str().unwrap().contains("bearer token"), "{}", r.text());
    }
    assert_eq!(p.metric("ringmaster_local_answers_total{reason=\"bad_credentials\"}"), 5.0);
    // No token: anonymous, 1 a minute.
    assert_eq!(p.get("/").status, 200);
    assert_eq!(p.get("/").status, 429);
}
