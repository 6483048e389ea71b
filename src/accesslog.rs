//! Access log: one line per request, JSON or the combined format, written by a
//! background thread so that a slow disk never blocks a request. When the writer
//! falls behind, lines are dropped and counted rather than queued without bound.
//! SIGHUP reopens the file, so logrotate can rename it away (no `copytruncate`).

use crate::metrics::GLOBAL;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Json,
    Combined,
}

/// Where lines go and how they look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub format: LogFormat,
    /// A file path, or "stdout".
    pub path: String,
}

pub struct AccessLog {
    pub settings: Settings,
    tx: SyncSender<Msg>,
    /// Set by `reopen`; the writer reopens the file before its next line.
    reopen: Arc<AtomicBool>,
}

/// What the writer thread is sent.
enum Msg {
    Line(String),
    /// Wakes the writer to look at the reopen flag.
    Reopen,
}

/// What one line says about a request.
pub struct Entry<'a> {
    pub client: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub version: http::Version,
    pub host: &'a str,
    pub status: u16,
    pub bytes: Option<u64>,
    pub duration: Duration,
    pub route: &'a str,
    pub endpoint: &'a str,
    pub user_agent: &'a str,
    pub referer: &'a str,
}

impl AccessLog {
    /// Starts the writer thread for `spec`; a file that cannot be opened falls
    /// back to standard error, with a warning.
    pub fn open(spec: Settings) -> AccessLog {
        let out = output(&spec.path);
        let (tx, rx) = sync_channel(8192);
        let reopen = Arc::new(AtomicBool::new(false));
        let (path, flag) = (spec.path.clone(), reopen.clone());
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, out, &path, &flag))
            .expect("spawn access log thread");
        AccessLog { settings: spec, tx, reopen }
    }

    /// Reopens the file by its path (after logrotate renamed it): lines
    /// written after this go to a file of that name, created if need be.
    pub fn reopen(&self) {
        if self.settings.path != "stdout" {
            self.reopen.store(true, Relaxed);
            // A full queue wakes the writer anyway.
            let _ = self.tx.try_send(Msg::Reopen);
        }
    }

    pub fn log(&self, e: &Entry) {
        let line = match self.settings.format {
            LogFormat::Json => json_line(e),
            LogFormat::Combined => combined_line(e),
        };
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            GLOBAL.access_log_dropped.fetch_add(1, Relaxed);
        }
    }
}

/// Where lines go: standard output, the file at `path` (appended to), or,
/// when it cannot be opened, standard error with an error logged.
fn output(path: &str) -> Box<dyn Write + Send> {
    if path == "stdout" {
        return Box::new(std::io::stdout());
    }
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => Box::new(f),
        Err(e) => {
            tracing::error!(path = %path, error = %e, "cannot open access log file; writing access log to stderr instead");
            Box::new(std::io::stderr())
        }
    }
}

fn writer(rx: Receiver<Msg>, out: Box<dyn Write + Send>, path: &str, reopen: &AtomicBool) {
    let mut out = std::io::BufWriter::new(out);
    while let Ok(msg) = rx.recv() {
        if reopen.swap(false, Relaxed) {
            let _ = out.flush();
            out = std::io::BufWriter::new(output(path));
            tracing::info!(path = %path, "access log reopened");
        }
        let mut write = |m: Msg| {
            if let Msg::Line(line) = m {
                let _ = out.write_all(line.as_bytes());
            }
        };
        write(msg);
        while let Ok(more) = rx.try_recv() {
            write(more);
        }
        let _ = out.flush();
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

fn json_line(e: &Entry) -> String {
    let v = serde_json::json!({
        "time": rfc3339(SystemTime::now()),
        "client": e.client.to_string(),
        "method": e.method,
        "path": e.path,
        "protocol": version_str(e.version),
        "host": e.host,
        "status": e.status,
        "bytes": e.bytes,
        "duration_ms": (e.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "route": e.route,
        "endpoint": e.endpoint,
        "user_agent": e.user_agent,
    });
    let mut s = v.to_string();
    s.push('\n');
    s
}

fn combined_line(e: &Entry) -> String {
    let bytes = e.bytes.map(|b| b.to_string()).unwrap_or_else(|| "-".into());
    let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    format!(
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\"\n",
        e.client,
        clf_time(SystemTime::now()),
        e.method,
        q(e.path),
        version_str(e.version),
        e.status,
        bytes,
        q(if e.referer.is_empty() { "-" } else { e.referer }),
        q(if e.user_agent.is_empty() { "-" } else { e.user_agent }),
    )
}

fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s) = crate::clock::civil(t);
    let ms = t.duration_since(UNIX_EPOCH).map(|d| d.subsec_millis()).unwrap_or(0);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let (y, mo, d, h, mi, s) = crate::clock::civil(t);
    format!("{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000", MONTHS[mo as usize - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times() {
        let t = UNIX_EPOCH + Duration::from_millis(971_211_336_042);
        assert_eq!(rfc3339(t), "2000-10-10T20:55:36.042Z");
        assert_eq!(clf_time(t), "10/Oct/2000:20:55:36 +0000");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap)[..10], "2000-02-29");
    }

    #[test]
    fn combined_format() {
        let e = Entry {
            client: "192.0.2.1".parse().unwrap(),
            method: "GET",
            path: "/a\"b",
            version: http::Version::HTTP_11,
            host: "x",
            status: 200,
            bytes: Some(12),
            duration: Duration::from_millis(3),
            route: "r",
            endpoint: "e",
            user_agent: "curl/8",
            referer: "",
        };
        let l = combined_line(&e);
        assert!(l.starts_with("192.0.2.1 - - ["), "{l}");
        assert!(l.ends_with("\"GET /a\\\"b HTTP/1.1\" 200 12 \"-\" \"curl/8\"\n"), "{l}");
        let j: serde_json::Value = serde_json::from_str(&json_line(&e)).unwrap();
        assert_eq!(j["status"], 200);
        assert_eq!(j["endpoint"], "e");
    }
}
