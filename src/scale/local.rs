//! The `local` scaler back-end: ringmaster starts replica processes itself
//! from a command template on ports of a configured range, and a replica
//! joins its pool only once it accepts connections; stopping one is SIGTERM
//! after its drain time. What the demo uses, and a single machine's way to
//! give a hot shard more processes.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How replicas are started (`backend = { local = { ... } }`).
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Run with `sh -c` after `{address}`, `{host}`, `{port}`, `{name}`,
    /// `{service}` and `{shard}` are replaced.
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
        self.command
            .replace("{address}", &addr.to_string())
            .replace("{host}", &addr.ip().to_string())
            .replace("{port}", &addr.port().to_string())
            .replace("{name}", name)
            .replace("{service}", service)
            .replace("{shard}", shard)
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
    child: Child,
}

/// Starts a replica of `shard` (of `service`) on `port` and waits until it
/// accepts connections; on failure it is stopped and the reason returned.
pub async fn start(s: &Settings, service: &str, shard: &str, port: u16) -> Result<Replica, String> {
    let addr = SocketAddr::new(s.host, port);
    let name = format!("{shard}-{port}");
    let line = s.command_for(addr, &name, service, shard);
    let mut c = Command::new("sh");
    c.args(["-c", &format!("exec {line}")]).stdin(Stdio::null()).stdout(Stdio::null());
    crate::child::dies_with_us(&mut c);
    let child = c.spawn().map_err(|e| format!("cannot run `{line}`: {e}"))?;
    let mut r = Replica { name, addr, child };
    let until = tokio::time::Instant::now() + s.ready_timeout;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(r);
        }
        if let Ok(Some(status)) = r.child.try_wait() {
            return Err(format!("`{line}` exited ({status}) before it accepted connections on {addr}"));
        }
        if tokio::time::Instant::now() >= until {
            r.stop(Duration::ZERO);
            return Err(format!("`{line}` did not accept connections on {addr} within {:?}", s.ready_timeout));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Replica {
    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        crate::child::stop(&mut self.child, grace);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop(Duration::from_millis(200));
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

    #[tokio::test]
    async fn a_replica_that_never_listens_is_reported_and_stopped() {
        let s = Settings { command: "sleep 30".into(), ready_timeout: Duration::from_millis(300), ..Settings::for_tests() };
        let port = Settings { ports: (39000, 39100), ..s.clone() }.free_port(&[]).unwrap();
        let err = start(&s, "svc", "a", port).await.err().unwrap();
        assert!(err.contains("did not accept connections"), "{err}");
        let err = start(&Settings { command: "exit 3".into(), ..s }, "svc", "a", port).await.err().unwrap();
        assert!(err.contains("exited"), "{err}");
    }
}
