//! The `command` scaler back-end: the operator's own command grows or
//! shrinks a shard (a cloud API, a process manager, a script) and says which
//! endpoints the shard has afterwards, one per line on its output or in a
//! file it writes. ringmaster then makes the pool exactly that list. The
//! command is bounded in time (its whole process group is killed when it runs
//! over) and in output (read through a bounded reader), and what it prints is
//! checked before any of it is used: a command that fails, hangs or prints
//! garbage changes nothing. Names reach it as data: shell-quoted in the
//! template, and as `RINGMASTER_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How the command is run (`command = { run = "...", ... }`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Run with `sh -c` after `{service}`, `{shard}`, `{pool}`, `{current}` and
    /// `{desired}` are replaced, each shell-quoted (also in the environment as RINGMASTER_*).
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

/// Why a command step changed nothing. Each names the command line as run.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("cannot run `{line}`: {source}")]
    Spawn { line: String, source: std::io::Error },
    #[error("`{line}` did not finish within {after:?}; it was killed with its process group")]
    Timeout { line: String, after: Duration },
    #[error("this root's lead lapsed while `{line}` ran; it was killed with its process group")]
    Lapsed { line: String },
    #[error("`{line}`: {source}")]
    Wait { line: String, source: std::io::Error },
    #[error("`{line}` printed over {MAX_LIST} bytes; it was killed")]
    TooMuchOutput { line: String },
    #[error("`{line}` failed ({status}): {stderr}")]
    Failed { line: String, status: std::process::ExitStatus, stderr: String },
    #[error("cannot read the endpoint list {}: {source}", path.display())]
    EndpointsFile { path: PathBuf, source: std::io::Error },
    #[error("the endpoint list of `{line}` is over {MAX_LIST} bytes")]
    ListTooLarge { line: String },
    #[error("the endpoint list of `{line}`: {why}")]
    BadList { line: String, why: ListError },
}

/// Why an endpoint list was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("line {line}: `{text}` is not `ADDRESS` or `NAME ADDRESS`")]
    Shape { line: usize, text: String },
    #[error("line {line}: `{addr}` is not IP:port")]
    Address { line: usize, addr: String },
    #[error("line {line}: {addr} is listed twice")]
    Twice { line: usize, addr: SocketAddr },
    #[error("no endpoint listed (a shard keeps at least one)")]
    Empty,
}

/// The largest endpoint list read back (output or file).
const MAX_LIST: usize = 1 << 20;

impl Settings {
    /// The command line for one step.
    pub fn line(&self, s: &Step<'_>) -> String {
        let (current, desired) = (s.current.to_string(), s.desired.to_string());
        super::shell::fill(
            &self.run,
            &[("service", s.service), ("shard", s.shard), ("pool", s.pool), ("current", &current), ("desired", &desired)],
        )
    }
}

/// Runs the command for `step` and returns the shard's endpoints as it
/// lists them, or why the step failed. It is killed (its process group) at
/// its own timeout or once `fence` resolves (this root's lead lapsed),
/// whichever comes first.
pub async fn run(
    settings: &Settings,
    step: &Step<'_>,
    fence: impl std::future::Future<Output = ()>,
) -> Result<Vec<(String, SocketAddr)>, CommandError> {
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
        .process_group(0)
        .kill_on_drop(true);
    let mut child = c.spawn().map_err(|source| CommandError::Spawn { line: line.clone(), source })?;
    let group = child.id().map(|p| p as libc::pid_t);
    let kill_group = || {
        if let Some(g) = group {
            // SAFETY: killpg on the process group this command leads.
            unsafe { libc::killpg(g, libc::SIGKILL) };
        }
    };
    let (mut stdout, mut stderr) = (child.stdout.take().expect("piped"), child.stderr.take().expect("piped"));
    let work = async {
        let (out, err) = tokio::join!(
            async {
                let out = bounded(&mut stdout, MAX_LIST).await;
                if out.is_none() {
                    kill_group();
                }
                out
            },
            bounded_prefix(&mut stderr, 400)
        );
        (out, err, child.wait().await)
    };
    let (out, err, status) = tokio::select! {
        done = tokio::time::timeout(settings.timeout, work) => match done {
            Ok(done) => done,
            Err(_) => {
                kill_group();
                return Err(CommandError::Timeout { line, after: settings.timeout });
            }
        },
        _ = fence => {
            kill_group();
            return Err(CommandError::Lapsed { line });
        }
    };
    let status = status.map_err(|source| CommandError::Wait { line: line.clone(), source })?;
    let Some(out) = out else { return Err(CommandError::TooMuchOutput { line }) };
    if !status.success() {
        return Err(CommandError::Failed { line, status, stderr: String::from_utf8_lossy(&err).trim().to_string() });
    }
    let text = match &settings.endpoints_file {
        None => out,
        Some(path) => {
            let bytes = tokio::fs::read(path).await.map_err(|source| CommandError::EndpointsFile { path: path.clone(), source })?;
            bytes
        }
    };
    if text.len() > MAX_LIST {
        return Err(CommandError::ListTooLarge { line });
    }
    parse(&String::from_utf8_lossy(&text)).map_err(|why| CommandError::BadList { line, why })
}

/// Everything `r` gives, or `None` once it gives more than `max` bytes.
async fn bounded(r: &mut (impl tokio::io::AsyncRead + Unpin), max: usize) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut v = Vec::new();
    match r.take(max as u64 + 1).read_to_end(&mut v).await {
        Ok(_) if v.len() <= max => Some(v),
        Ok(_) => None,
        Err(_) => Some(v),
    }
}

/// The first `keep` bytes `r` gives; the rest is read and dropped, so the
/// writer never blocks on a full pipe.
async fn bounded_prefix(r: &mut (impl tokio::io::AsyncRead + Unpin), keep: usize) -> Vec<u8> {
    use tokio::io::AsyncReadExt as _;
    let (mut v, mut buf) = (Vec::new(), [0u8; 4096]);
    while let Ok(n @ 1..) = r.read(&mut buf).await {
        let room = keep.saturating_sub(v.len()).min(n);
        v.extend_from_slice(&buf[..room]);
    }
    v
}

/// One endpoint a line: `ADDRESS` or `NAME ADDRESS`; blank lines and `#`
/// comments skipped. An empty list, a bad address or a repeated one is refused.
pub fn parse(text: &str) -> Result<Vec<(String, SocketAddr)>, ListError> {
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
            _ => return Err(ListError::Shape { line: n + 1, text: l.to_string() }),
        };
        let addr: SocketAddr = addr.parse().map_err(|_| ListError::Address { line: n + 1, addr: addr.to_string() })?;
        if list.iter().any(|e| e.1 == addr) {
            return Err(ListError::Twice { line: n + 1, addr });
        }
        list.push((name.to_string(), addr));
    }
    if list.is_empty() {
        return Err(ListError::Empty);
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
        assert!(parse("").unwrap_err().to_string().contains("no endpoint"));
        assert!(parse("localhost:80").unwrap_err().to_string().contains("line 1"));
        assert!(parse("a b c").unwrap_err().to_string().contains("NAME ADDRESS"));
        assert!(parse("127.0.0.1:1\nx 127.0.0.1:1").unwrap_err().to_string().contains("twice"));
    }

    #[tokio::test]
    async fn the_command_is_told_the_step_and_its_list_read_back() {
        let s = settings("echo \"{service} {shard} {pool} {current} {desired}\" >&2; for i in $(seq 1 $RINGMASTER_DESIRED); do echo 127.0.0.1:900$i; done");
        let list = run(&s, &step(), std::future::pending()).await.unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(s.line(&step()).split(';').next().unwrap(), "echo \"users a users/a 1 3\" >&2");
    }

    #[tokio::test]
    async fn failures_change_nothing_and_say_why() {
        assert!(run(&settings("echo nope >&2; exit 4"), &step(), std::future::pending()).await.unwrap_err().to_string().contains("nope"));
        let slow = Settings { timeout: Duration::from_millis(200), ..settings("sleep 5") };
        assert!(run(&slow, &step(), std::future::pending()).await.unwrap_err().to_string().contains("killed"));
        assert!(run(&settings("echo garbage"), &step(), std::future::pending()).await.unwrap_err().to_string().contains("not IP:port"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("eps");
        let s = Settings { endpoints_file: Some(file.clone()), ..settings(&format!("echo 127.0.0.1:7001 > {}", file.display())) };
        assert_eq!(run(&s, &step(), std::future::pending()).await.unwrap()[0].1.port(), 7001);
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    fn settings(run: &str, timeout: Duration) -> Settings {
        Settings { run: run.into(), endpoints_file: None, timeout }
    }

    /// A shard name is data: `{shard}` in the template never runs what it holds.
    #[tokio::test]
    async fn a_name_never_reaches_the_shell_as_code() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let shard = format!("a$(touch {})`touch {}`;touch {}", pwned.display(), pwned.display(), pwned.display());
        let step = Step { service: "users", shard: &shard, pool: "users/x", current: 1, desired: 1 };
        let s = settings("echo {shard} >&2; test \"$RINGMASTER_SHARD\" = {shard} && echo 127.0.0.1:9001", Duration::from_secs(5));
        let list = run(&s, &step, std::future::pending()).await.unwrap();
        assert_eq!(list.len(), 1, "the name reached the command intact");
        assert!(!pwned.exists(), "the shard name ran as shell code");
        // Plain names stay bare, for templates that quote them themselves.
        let plain = Step { service: "users", shard: "a-1.b:2", pool: "users/a", current: 1, desired: 3 };
        assert_eq!(settings("x \"{shard}\"", Duration::ZERO).line(&plain), "x \"a-1.b:2\"");
    }

    /// Output is read through a bounded reader: a command that prints without
    /// end fails at the bound, not at the timeout with everything in memory.
    #[tokio::test]
    async fn endless_output_fails_at_the_bound() {
        let started = std::time::Instant::now();
        let step = Step { service: "s", shard: "a", pool: "s/a", current: 1, desired: 2 };
        let err =
            run(&settings("yes 127.0.0.1:9001", Duration::from_secs(20)), &step, std::future::pending()).await.unwrap_err().to_string();
        assert!(err.contains("over"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    }

    /// On timeout the command's whole process group is killed: nothing it
    /// started in the background outlives the step.
    #[tokio::test]
    async fn a_timed_out_command_takes_its_children_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let step = Step { service: "s", shard: "a", pool: "s/a", current: 1, desired: 2 };
        let s = settings(&format!("sleep 30 & echo $! > {}; wait", pidfile.display()), Duration::from_millis(500));
        let err = run(&s, &step, std::future::pending()).await.unwrap_err().to_string();
        assert!(err.contains("killed"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let gone = |pid: i32| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.is_empty() || stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))
        };
        let until = std::time::Instant::now() + Duration::from_secs(3);
        while !gone(pid) && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(gone(pid), "the command's background child {pid} outlived its timeout");
    }
}
