//! The `local` scaler back-end: ringmaster starts replica processes itself
//! from a command template on ports of a configured range, and a replica
//! joins its pool only once it accepts connections; stopping one is SIGTERM
//! after its drain time. What the demo uses, and a single machine's way to
//! give a hot shard more processes.

use super::ScaleError;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How replicas are started (`backend = { local = { ... } }`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Run with `sh -c` after `{address}`, `{host}`, `{port}`, `{name}`,
    /// `{service}` and `{shard}` are replaced, each shell-quoted (also in the
    /// environment as RINGMASTER_*).
    pub command: String,
    pub host: IpAddr,
    /// The ports replicas may listen on, both ends included.
    pub ports: (u16, u16),
    /// How long a new replica has to accept connections.
    pub ready_timeout: Duration,
    /// How long a replica taken out of its pool may finish its requests.
    pub drain: Duration,
}

impl Settings {
    #[cfg(test)]
    pub fn for_tests() -> Settings {
        Settings {
            command: "true".into(),
            host: [127, 0, 0, 1].into(),
            ports: (1, 1),
            ready_timeout: Duration::from_secs(1),
            drain: Duration::ZERO,
        }
    }

    /// The command line for one replica.
    pub fn command_for(&self, addr: SocketAddr, name: &str, service: &str, shard: &str) -> String {
        let (address, host, port) = (addr.to_string(), addr.ip().to_string(), addr.port().to_string());
        super::shell::fill(
            &self.command,
            &[("address", &address), ("host", &host), ("port", &port), ("name", name), ("service", service), ("shard", shard)],
        )
    }

    /// A port of the range nothing listens on and `taken` does not hold.
    pub fn free_port(&self, taken: &[u16]) -> Option<u16> {
        (self.ports.0..=self.ports.1).find(|p| !taken.contains(p) && std::net::TcpListener::bind((self.host, *p)).is_ok())
    }
}

/// A replica process the scaler started.
pub struct Replica {
    pub name: String,
    pub addr: SocketAddr,
    /// Taken when the replica is stopped.
    child: Option<Child>,
}

/// Starts a replica of `shard` (of `service`) on `port` and waits until it
/// accepts connections; on failure it is stopped and the reason returned.
pub async fn start(s: &Settings, service: &str, shard: &str, port: u16) -> Result<Replica, ScaleError> {
    let addr = SocketAddr::new(s.host, port);
    let name = format!("{shard}-{port}");
    let line = s.command_for(addr, &name, service, shard);
    let mut c = Command::new("sh");
    c.args(["-c", &format!("exec {line}")]).stdin(Stdio::null()).stdout(Stdio::null());
    c.env("RINGMASTER_SERVICE", service).env("RINGMASTER_SHARD", shard).env("RINGMASTER_NAME", &name);
    c.env("RINGMASTER_ADDRESS", addr.to_string());
    crate::child::dies_with_us(&mut c);
    let child = c.spawn().map_err(|e| ScaleError::Spawn { line: line.clone(), why: e.to_string() })?;
    let mut r = Replica { name, addr, child: Some(child) };
    let until = tokio::time::Instant::now() + s.ready_timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(r);
        }
        if let Some(Ok(Some(status))) = r.child.as_mut().map(|c| c.try_wait()) {
            return Err(ScaleError::Exited { line, status: status.to_string(), addr });
        }
        if tokio::time::Instant::now() >= until {
            r.stop(Duration::ZERO);
            return Err(ScaleError::NotReady { line, addr, timeout: s.ready_timeout });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Replica {
    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            crate::child::stop(&mut c, grace);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }
}

impl Drop for Replica {
    /// A replica still running is stopped on a thread of its own: the grace
    /// wait must not hold a runtime thread.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                std::thread::spawn(move || crate::child::stop(&mut child, Duration::from_millis(200)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_names_the_replica() {
        let s = Settings {
            command: "backend --listen {address} --name {name} # {service}/{shard} {host}:{port}".into(),
            ..Settings::for_tests()
        };
        let line = s.command_for("127.0.0.1:9001".parse().unwrap(), "a-9001", "users", "a");
        assert_eq!(line, "backend --listen 127.0.0.1:9001 --name a-9001 # users/a 127.0.0.1:9001");
    }

    #[test]
    fn names_in_the_template_are_data() {
        let dir = tempfile::tempdir().unwrap();
        let pwned = dir.path().join("pwned");
        let s = Settings { command: "echo {name} {service} {shard}".into(), ..Settings::for_tests() };
        let shard = format!("a$(touch {})", pwned.display());
        let line = s.command_for("127.0.0.1:9001".parse().unwrap(), &format!("{shard}-9001"), "users", &shard);
        let out = Command::new("sh").args(["-c", &line]).output().unwrap();
        assert!(!pwned.exists(), "a shard name ran as shell code: {line}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{shard}-9001 users {shard}"));
    }

    #[tokio::test]
    async fn a_replica_that_never_listens_is_reported_and_stopped() {
        let s = Settings { command: "sleep 30".into(), ready_timeout: Duration::from_millis(300), ..Settings::for_tests() };
        let port = Settings { ports: (39000, 39100), ..s.clone() }.free_port(&[]).unwrap();
        let err = start(&s, "svc", "a", port).await.err().unwrap();
        assert!(err.to_string().contains("did not accept connections"), "{err}");
        let err = start(&Settings { command: "exit 3".into(), ..s }, "svc", "a", port).await.err().unwrap();
        assert!(err.to_string().contains("exited"), "{err}");
    }
}
