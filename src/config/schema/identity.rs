//! Config shapes of identities and rate limits: API keys, JWTs, named
//! policies, and the shared rate-limit store.

use super::super::duration::Dur;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The shared rate-limit store.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitStoreSpec {
    /// `redis://host:port/db`; with `cluster`, any node of the cluster.
    pub redis: Spanned<String>,
    /// Redis Cluster: slots are discovered from the node given in `redis`.
    #[serde(default)]
    pub cluster: bool,
    /// A decision not answered in this time counts as a failure.
    #[serde(default = "d_redis_timeout")]
    pub timeout: Dur,
    /// While Redis fails: `open` (local counters decide) or `closed` (503).
    #[serde(default = "d_on_failure")]
    pub on_failure: FailMode,
    #[serde(default = "d_redis_prefix")]
    pub prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    Open,
    Closed,
}

fn d_redis_timeout() -> Dur {
    Dur::millis(100)
}
fn d_on_failure() -> FailMode {
    FailMode::Open
}
fn d_redis_prefix() -> String {
    "rm:".into()
}

/// How clients are told apart.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// Anonymous IPv4 clients are counted by this prefix (32: each address).
    #[serde(default = "d_v4_prefix")]
    pub ipv4_prefix: Spanned<u8>,
    /// Anonymous IPv6 clients are counted by this prefix (64: each subnet).
    #[serde(default = "d_v6_prefix")]
    pub ipv6_prefix: Spanned<u8>,
    /// Where clients present API keys; absent: no API keys.
    #[serde(default)]
    pub api_key: Option<ApiKeySource>,
    /// The API keys, each with a tier and an owner.
    #[serde(default)]
    pub keys: Vec<ApiKeySpec>,
    /// More API keys, from a TOML file of `[[keys]]` tables like `[[identity.keys]]`
    /// (kept apart from the config, e.g. as a secret); read at start and reload.
    #[serde(default)]
    pub keys_file: Option<Spanned<String>>,
    /// Bearer JWTs as credentials.
    #[serde(default)]
    pub jwt: Option<Spanned<JwtSpec>>,
    /// A presented key that matches none: `reject` (401) or `anonymous`.
    #[serde(default = "d_invalid")]
    pub invalid_credentials: InvalidCredentials,
}

impl Default for IdentitySpec {
    fn default() -> Self {
        IdentitySpec {
            ipv4_prefix: d_v4_prefix(),
            ipv6_prefix: d_v6_prefix(),
            api_key: None,
            keys: Vec::new(),
            keys_file: None,
            jwt: None,
            invalid_credentials: d_invalid(),
        }
    }
}

/// Bearer JWT verification: keys, claims checked, claims read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSpec {
    /// Shared secret for HS256.
    #[serde(default, skip_serializing)]
    pub hs256_secret: Option<String>,
    /// PEM file of the RSA public key for RS256.
    #[serde(default)]
    pub rsa_public_key: Option<Spanned<String>>,
    /// PEM file of the EC P-256 public key for ES256.
    #[serde(default)]
    pub ec_public_key: Option<Spanned<String>>,
    /// A JWKS file (RSA and EC keys, chosen by `kid`).
    #[serde(default)]
    pub jwks_file: Option<Spanned<String>>,
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
    #[serde(default = "d_tier_claim")]
    pub tier_claim: String,
    #[serde(default = "d_owner_claim")]
    pub owner_claim: String,
    /// Clock skew allowed on exp and nbf.
    #[serde(default = "d_leeway")]
    pub leeway: Dur,
}

fn d_tier_claim() -> String {
    "tier".into()
}
fn d_owner_claim() -> String {
    "sub".into()
}
fn d_leeway() -> Dur {
    Dur::secs(30)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidCredentials {
    Reject,
    Anonymous,
}

fn d_invalid() -> InvalidCredentials {
    InvalidCredentials::Reject
}

/// Where an API key is read from: a header, a query parameter, or both (header first).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySource {
    #[serde(default)]
    pub header: Option<Spanned<String>>,
    #[serde(default)]
    pub query: Option<String>,
}

/// One API key. Give the key itself (hashed when loaded) or its SHA-256 in hex.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySpec {
    #[serde(default, skip_serializing)]
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub sha256: Option<Spanned<String>>,
    pub tier: Spanned<String>,
    pub owner: Spanned<String>,
    /// Policies that replace the tier's for this owner.
    #[serde(default)]
    pub rate_limit: Option<Vec<Spanned<String>>>,
}

fn d_v4_prefix() -> Spanned<u8> {
    Spanned::new(0..0, 32)
}
fn d_v6_prefix() -> Spanned<u8> {
    Spanned::new(0..0, 64)
}

/// Whose requests a rate limit counts together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitScope {
    /// Each client (address, grouped by prefix).
    Client,
    /// The whole route: a ceiling over every client.
    Route,
}

/// A rate limit: `rate` requests per `period`, `burst` at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSpec {
    pub rate: Spanned<u64>,
    pub period: Spanned<Dur>,
    /// Requests allowed at once; the rate when absent.
    #[serde(default)]
    pub burst: Option<Spanned<u64>>,
    #[serde(default = "d_scope")]
    pub scope: LimitScope,
}

fn d_scope() -> LimitScope {
    LimitScope::Client
}

/// The content of an API keys file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysFile {
    #[serde(default)]
    pub keys: Vec<ApiKeySpec>,
}
