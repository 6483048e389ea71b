//! The `command` scaler back-end: the operator's own command grows or
//! shrinks a shard (a cloud API, a process manager, a script) and says which
//! endpoints the shard has afterwards, one per line on its output or in a
//! file it writes. ringmaster then makes the pool exactly that list. The
//! command is bounded in time, and what it prints is checked before any of
//! it is used: a command that fails, hangs or prints garbage changes nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the command is run (`command = { run = "...", ... }`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Run with `sh -c` after `{service}`, `{shard}`, `{pool}`, `{current}` and
    /// `{desired}` are replaced (also in the environment as RINGMASTER_*).
    pub run: String,
    /// Where the endpoint list is read after the command; its output when `None`.
    pub endpoints_file: Option<PathBuf>,
    /// How long the command may run before it is killed and the step fails.
    pub timeout: Duration,
}

/// What one step is about.
pub struct Step<'a> {
    pub service: &'a str,
    pub shard: &'a str,
    pub pool: &'a str,
    pub current: usize,
    pub desired: usize,
}

/// The largest endpoint list read back (output or file).
const MAX_LIST: usize = 1 << 20;

impl Settings {
    /// The command line for one step.
    pub fn line(&self, s: &Step<'_>) -> String {
        self.run
            .replace("{service}", s.service)
            .replace("{shard}", s.shard)
            .replace("{pool}", s.pool)
            .replace("{current}", &s.current.to_string())
            .replace("{desired}", &s.desired.to_string())
    }
}

/// Runs the command for `step` and returns the shard's endpoints as it
/// lists them, or why the step failed.
pub async fn run(settings: &Settings, step: &Step<'_>) -> Result<Vec<(String, SocketAddr)>, String> {
    let line = settings.line(step);
    let mut c = tokio::process::Command::new("sh");
    c.args(["-c", &line])
        .env("RINGMASTER_SERVICE", step.service)
        .env("RINGMASTER_SHARD", step.shard)
        .env("RINGMASTER_POOL", step.pool)
        .env("RINGMASTER_CURRENT", step.current.to_string())
        .env("RINGMASTER_DESIRED", step.desired.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = c.spawn().map_err(|e| format!("cannot run `{line}`: {e}"))?;
    let out = match tokio::time::timeout(settings.timeout, child.wait_with_output()).await {
        Err(_) => return Err(format!("`{line}` did not finish within {:?}; it was killed", settings.timeout)),
        Ok(Err(e)) => return Err(format!("`{line}`: {e}")),
        Ok(Ok(out)) => out,
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(400)]).trim().to_string();
        return Err(format!("`{line}` failed ({}): {err}", out.status));
    }
    let text = match &settings.endpoints_file {
        None => out.stdout,
        Some(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|e| format!("cannot read the endpoint list {}: {e}", path.display()))?;
            bytes
        }
    };
    if text.len() > MAX_LIST {
        return Err(format!("the endpoint list of `{line}` is over {MAX_LIST} bytes"));
    }
    parse(&String::from_utf8_lossy(&text)).map_err(|e| format!("the endpoint list of `{line}`: {e}"))
}

/// One endpoint a line: `ADDRESS` or `NAME ADDRESS`; blank lines and `#`
/// comments skipped. An empty list, a bad address or a repeated one is refused.
pub fn parse(text: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut list: Vec<(String, SocketAddr)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let mut words = l.split_whitespace();
        let (name, addr) = match (words.next(), words.next(), words.next()) {
            (Some(a), None, _) => (a, a),
            (Some(name), Some(a), None) => (name, a),
            _ => return Err(format!("line {}: `{l}` is not `ADDRESS` or `NAME ADDRESS`", n + 1)),
        };
        let addr: SocketAddr = addr.parse().map_err(|_| format!("line {}: `{addr}` is not IP:port", n + 1))?;
        if list.iter().any(|e| e.1 == addr) {
            return Err(format!("line {}: {addr} is listed twice", n + 1));
        }
        list.push((name.to_string(), addr));
    }
    if list.is_empty() {
        return Err("no endpoint listed (a shard keeps at least one)".into());
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(run: &str) -> Settings {
        Settings { run: run.into(), endpoints_file: None, timeout: Duration::from_secs(5) }
    }

    fn step() -> Step<'static> {
        Step { service: "users", shard: "a", pool: "users/a", current: 1, desired: 3 }
    }

    #[test]
    fn lists_are_read_strictly() {
        let l = parse("# the shard\n127.0.0.1:9001\n\na2 127.0.0.1:9002  # new\n").unwrap();
        assert_eq!(l, vec![("127.0.0.1:9001".into(), "127.0.0.1:9001".parse().unwrap()), ("a2".into(), "127.0.0.1:9002".parse().unwrap())]);
        assert!(parse("").unwrap_err().contains("no endpoint"));
        assert!(parse("localhost:80").unwrap_err().contains("line 1"));
        assert!(parse("a b c").unwrap_err().contains("NAME ADDRESS"));
        assert!(parse("127.0.0.1:1\nx 127.0.0.1:1").unwrap_err().contains("twice"));
    }

    #[tokio::test]
    async fn the_command_is_told_the_step_and_its_list_read_back() {
        let s = settings("echo \"{service} {shard} {pool} {current} {desired}\" >&2; for i in $(seq 1 $RINGMASTER_DESIRED); do echo 127.0.0.1:900$i; done");
        let list = run(&s, &step()).await.unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(s.line(&step()).split(';').next().unwrap(), "echo \"users a users/a 1 3\" >&2");
    }

    #[tokio::test]
    async fn failures_change_nothing_and_say_why() {
        assert!(run(&settings("echo nope >&2; exit 4"), &step()).await.unwrap_err().contains("nope"));
        let slow = Settings { timeout: Duration::from_millis(200), ..settings("sleep 5") };
        assert!(run(&slow, &step()).await.unwrap_err().contains("killed"));
        assert!(run(&settings("echo garbage"), &step()).await.unwrap_err().contains("not IP:port"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eps");
        let s = Settings { endpoints_file: Some(file.clone()), ..settings(&format!("echo 127.0.0.1:7001 > {}", file.display())) };
        assert_eq!(run(&s, &step()).await.unwrap()[0].1.port(), 7001);
    }
}
