//! Config errors that name file, line and column, and say what to do.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem found in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// What the user can do about it.
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.col, self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems, for callers that report them one by one.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Invalid(d) => d,
            ConfigError::Read { .. } => &[],
        }
    }
}

fn render(d: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, e) in d.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&e.to_string());
    }
    out
}

/// Collects diagnostics against one source text, turning byte spans into positions.
pub struct Reporter<'a> {
    file: &'a str,
    source: &'a str,
    pub found: Vec<Diagnostic>,
    /// What is allowed but risky: reported, and the config still accepted.
    pub warnings: Vec<Diagnostic>,
    /// Problems reported, counting repeats (a value shared by several routes is
    /// checked by each, and its problem listed once).
    reported: usize,
}

impl<'a> Reporter<'a> {
    pub fn new(file: &'a str, source: &'a str) -> Self {
        Reporter { file, source, found: Vec::new(), warnings: Vec::new(), reported: 0 }
    }

    /// Records a problem at `span`; `hint` says what to do.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        let d = self.diagnostic(span, message.into(), hint.into());
        self.reported += 1;
        if !self.found.contains(&d) {
            self.found.push(d);
        }
    }

    /// Records a warning at `span`: the config is accepted, and the operator told.
    pub fn warn(&mut self, span: Range<usize>, message: impl Into<String>, hint: impl Into<String>) {
        let d = self.diagnostic(span, message.into(), hint.into());
        if !self.warnings.contains(&d) {
            self.warnings.push(d);
        }
    }

    fn diagnostic(&self, span: Range<usize>, message: String, hint: String) -> Diagnostic {
        let (line, col) = position(self.source, span.start);
        Diagnostic { file: self.file.to_string(), line, col, message, hint: if hint.is_empty() { None } else { Some(hint) } }
    }

    /// A mark to ask [`Reporter::clean_since`] about.
    pub fn mark(&self) -> usize {
        self.reported
    }

    /// Whether nothing was reported since `mark`.
    pub fn clean_since(&self, mark: usize) -> bool {
        self.reported == mark
    }

    /// Records a problem of another file (an API keys file).
    pub fn extend(&mut self, other: Reporter) {
        self.reported += other.reported;
        self.found.extend(other.found);
        self.warnings.extend(other.warnings);
    }

    /// The problems found, in file order.
    /// The warnings when nothing is wrong, else every problem.
    pub fn finish(mut self) -> Result<Vec<Diagnostic>, ConfigError> {
        self.found.sort_by_key(|d| (d.line, d.col));
        if self.found.is_empty() {
            self.warnings.sort_by_key(|d| (d.line, d.col));
            Ok(self.warnings)
        } else {
            Err(ConfigError::Invalid(self.found))
        }
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub fn position(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(position(src, 0), (1, 1));
        assert_eq!(position(src, 6), (2, 1));
        assert_eq!(position(src, 8), (2, 3));
    }
}
