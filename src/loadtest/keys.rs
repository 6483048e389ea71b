//! Which path each request of a load test asks for: the URL's own, or a
//! template filled with a key drawn from a Zipf distribution (a few keys
//! asked for often, many rarely: the shape a cache meets in production).

pub use crate::ring::analyze::Zipf;

/// The paths requests ask for.
#[derive(Clone)]
pub enum Paths {
    Fixed(String),
    /// `template` with `{key}` replaced by a drawn rank.
    Keys {
        template: String,
        zipf: Zipf,
    },
}

impl Paths {
    /// From `--keys zipf:S:N` and `--key-template`.
    pub fn parse(path: &str, keys: Option<&str>, template: Option<&str>) -> Result<Paths, String> {
        let Some(spec) = keys else {
            return match template {
                Some(_) => Err("--key-template needs --keys zipf:S:N".into()),
                None => Ok(Paths::Fixed(path.to_string())),
            };
        };
        let parts: Vec<&str> = spec.split(':').collect();
        let (s, n) = match parts.as_slice() {
            ["zipf", s, n] => (s.parse::<f64>().ok(), n.parse::<usize>().ok()),
            _ => (None, None),
        };
        let (Some(s), Some(n)) = (s.filter(|s| s.is_finite() && *s >= 0.0), n.filter(|n| (1..=100_000_000).contains(n))) else {
            return Err(format!("--keys `{spec}`: write zipf:EXPONENT:KEYS, such as zipf:1.0:100000"));
        };
        let template = template.map(str::to_string).unwrap_or_else(|| format!("{}{{key}}", path.trim_end_matches('/').to_string() + "/"));
        if !template.contains("{key}") || !template.starts_with('/') {
            return Err(format!("--key-template `{template}`: a path holding {{key}}, such as /users/{{key}}"));
        }
        Ok(Paths::Keys { template, zipf: Zipf::new(s, n) })
    }

    pub fn next(&self, rng: &mut fastrand::Rng) -> String {
        match self {
            Paths::Fixed(p) => p.clone(),
            Paths::Keys { template, zipf } => template.replace("{key}", &zipf.sample(rng).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_puts_the_first_ranks_first() {
        let z = Zipf::new(1.0, 1000);
        let mut rng = fastrand::Rng::with_seed(7);
        let draws: Vec<usize> = (0..20_000).map(|_| z.sample(&mut rng)).collect();
        let top = draws.iter().filter(|&&r| r == 0).count() as f64 / draws.len() as f64;
        // H(1000) is about 7.49: rank 1 has about 13% of the draws.
        assert!((0.11..0.16).contains(&top), "{top}");
        assert!(draws.iter().all(|&r| r < 1000));
    }

    #[test]
    fn templates_and_bad_specs() {
        let mut rng = fastrand::Rng::with_seed(1);
        let p = Paths::parse("/x", Some("zipf:1.0:10"), Some("/users/{key}")).unwrap();
        assert!(p.next(&mut rng).starts_with("/users/"));
        assert!(Paths::parse("/items", Some("zipf:1:5"), None).unwrap().next(&mut rng).starts_with("/items/"));
        assert!(Paths::parse("/", Some("zipf:x:10"), None).is_err());
        assert!(Paths::parse("/", Some("zipf:1.0:10"), Some("/nokey")).is_err());
        assert!(Paths::parse("/", None, Some("/{key}")).is_err());
        assert_eq!(Paths::parse("/p", None, None).unwrap().next(&mut rng), "/p");
    }
}
