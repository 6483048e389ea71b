//! Durations in config files, written as `250ms`, `10s`, `5m` or `1h`.
//!
//! A newtype so that a malformed duration is a serde error and therefore carries
//! the file position of the bad value.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration read from config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    pub const fn secs(s: u64) -> Dur {
        Dur(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Dur {
        Dur(Duration::from_millis(ms))
    }
}

/// The longest duration a config may give: ten years. Longer ones overflow the
/// clock arithmetic of timers and deadlines (a panic, and on reload an exit).
pub const MAX: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why a duration was refused; each says how to write one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` has no unit: write it as \"250ms\", \"10s\", \"5m\" or \"1h\"")]
    NoUnit(String),
    #[error("`{0}` is not a duration: write it as \"250ms\", \"10s\", \"5m\" or \"1h\"")]
    NotANumber(String),
    #[error("`{0}` is not a duration unit: use ms, s, m or h")]
    Unit(String),
    #[error("`{0}` is longer than the 10 years a duration may be")]
    TooLong(String),
}

/// Parses `250ms`, `10s`, `1.5s`, `5m`, `1h`; at most [`MAX`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(|| DurationError::NoUnit(t.to_string()))?;
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| DurationError::NotANumber(t.to_string()))?;
    let unit = unit.trim();
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(DurationError::Unit(unit.to_string())),
    };
    match Duration::try_from_secs_f64(value * scale) {
        Ok(d) if d <= MAX => Ok(d),
        _ => Err(DurationError::TooLong(t.to_string())),
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map(Dur).map_err(de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse("10").unwrap_err(), DurationError::NoUnit("10".into()));
        assert!(parse("10x").unwrap_err().to_string().contains("not a duration unit"));
        assert!(parse("..s").is_err());
        assert!(matches!(parse("99999999999999999999999999999h"), Err(DurationError::TooLong(_))));
        assert!(matches!(parse(&format!("{}h", "9".repeat(400))), Err(DurationError::TooLong(_))), "infinite");
        assert!(parse("100000h").unwrap_err().to_string().contains("longer than"));
        assert_eq!(parse("87600h").unwrap(), MAX);
    }
}
