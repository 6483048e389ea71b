//! Templates the scaler's back-ends hand to `sh -c`: values (service and
//! shard names, addresses, counts) are data, never code. A value made only of
//! characters no shell treats specially goes in bare (so a template may quote
//! it itself); any other is single-quoted, as POSIX `sh` reads it.

use std::borrow::Cow;

/// `value` as one shell word that means exactly `value`.
pub fn quote(value: &str) -> Cow<'_, str> {
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"_-.,:/@%+=".contains(&b);
    if !value.is_empty() && value.bytes().all(safe) {
        return Cow::Borrowed(value);
    }
    Cow::Owned(format!("'{}'", value.replace('\'', r"'\''")))
}

/// `template` with each `{name}` of `values` replaced by its value, quoted.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut line = template.to_string();
    for (name, value) in values {
        line = line.replace(&format!("{{{name}}}"), &quote(value));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_words_stay_bare_and_others_are_quoted() {
        assert_eq!(quote("users/a-1.b:2"), "users/a-1.b:2");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("a$(x)`y`;z"), "'a$(x)`y`;z'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        let out = std::process::Command::new("sh").args(["-c", &format!("printf %s {}", quote("it's $(no) `x` \"q\""))]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's $(no) `x` \"q\"");
    }

    #[test]
    fn fill_replaces_every_name() {
        assert_eq!(fill("run {a} {b} {a}", &[("a", "1"), ("b", "x y")]), "run 1 'x y' 1");
    }
}
