//! Bearer JWTs as credentials: HS256, RS256 and ES256 signatures checked
//! against keys from config, PEM files or a JWKS file; exp, nbf, iss and aud
//! checked; the tier and the owner read from claims.

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("the bearer token is not valid: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    #[error("the bearer token is signed with {0:?}, which this proxy does not accept")]
    Algorithm(Algorithm),
    #[error("no key verifies this bearer token's signature")]
    NoKey,
}

/// A key that verifies tokens of one algorithm, with its JWKS key id.
#[derive(Clone)]
pub struct Key {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub key: DecodingKey,
}

#[derive(Clone)]
pub struct JwtVerifier {
    pub keys: Vec<Key>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_secs: u64,
    pub tier_claim: String,
    pub owner_claim: String,
}

/// What a valid token says about its bearer.
pub struct Bearer {
    pub tier: String,
    pub owner: String,
}

impl JwtVerifier {
    pub fn verify(&self, token: &str) -> Result<Bearer, JwtError> {
        let header = decode_header(token)?;
        if !matches!(header.alg, Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256) {
            return Err(JwtError::Algorithm(header.alg));
        }
        let key = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .find(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .ok_or(JwtError::NoKey)?;
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway_secs;
        v.validate_nbf = true;
        match &self.issuer {
            Some(i) => v.set_issuer(&[i]),
            None => v.iss = None,
        }
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        let claims = decode::<Map<String, Value>>(token, &key.key, &v)?.claims;
        let text = |name: &str| claims.get(name).and_then(|c| c.as_str()).map(str::to_string);
        Ok(Bearer {
            tier: text(&self.tier_claim).unwrap_or_else(|| "authenticated".into()),
            owner: text(&self.owner_claim).unwrap_or_default(),
        })
    }
}

/// Where a verifier's keys come from: a secret, PEM files, a JWKS file.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeySources<'a> {
    pub hs256_secret: Option<&'a str>,
    pub rsa_public_key: Option<&'a str>,
    pub ec_public_key: Option<&'a str>,
    pub jwks_file: Option<&'a str>,
}

/// Why a key file could not be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not an RSA public key in PEM: {source}")]
    Rsa { path: String, source: jsonwebtoken::errors::Error },
    #[error("{path} is not an EC public key in PEM: {source}")]
    Ec { path: String, source: jsonwebtoken::errors::Error },
    #[error("{path} is not a JWKS document: {source}")]
    Jwks { path: String, source: serde_json::Error },
    #[error("a key in {path} cannot be used: {source}")]
    Jwk { path: String, source: jsonwebtoken::errors::Error },
}

/// Loads the keys `spec` names; errors say which file and why.
pub fn load_keys(spec: KeySources) -> Result<Vec<Key>, KeyError> {
    let mut keys = Vec::new();
    if let Some(s) = spec.hs256_secret {
        keys.push(Key { alg: Algorithm::HS256, kid: None, key: DecodingKey::from_secret(s.as_bytes()) });
    }
    let read = |path: &str| std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_string(), source });
    if let Some(p) = spec.rsa_public_key {
        let pem = read(p)?;
        let key = DecodingKey::from_rsa_pem(&pem).map_err(|source| KeyError::Rsa { path: p.to_string(), source })?;
        keys.push(Key { alg: Algorithm::RS256, kid: None, key });
    }
    if let Some(p) = spec.ec_public_key {
        let pem = read(p)?;
        let key = DecodingKey::from_ec_pem(&pem).map_err(|source| KeyError::Ec { path: p.to_string(), source })?;
        keys.push(Key { alg: Algorithm::ES256, kid: None, key });
    }
    if let Some(p) = spec.jwks_file {
        let text = read(p)?;
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(&text).map_err(|source| KeyError::Jwks { path: p.to_string(), source })?;
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|source| KeyError::Jwk { path: p.to_string(), source })?;
            keys.push(Key { alg, kid: jwk.common.key_id.clone(), key });
        }
    }
    Ok(keys)
}
