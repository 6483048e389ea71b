//! Handshake outcomes, counted: completed handshakes by protocol version and
//! whether the session was resumed, failures by reason, so an operator can
//! tell scanners and plain-HTTP clients from expired client certificates or
//! clients that distrust the proxy's certificate.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a handshake failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Not finished within the header read timeout.
    Timeout,
    /// The client went away mid-handshake.
    Closed,
    /// Bytes that are not TLS (often plain HTTP sent to an https port).
    NotTls,
    /// No protocol version, cipher suite, group or ALPN protocol in common.
    Incompatible,
    /// mTLS: no client certificate where one is required.
    ClientCertMissing,
    /// mTLS: a client certificate that does not verify (unknown CA, expired, ...).
    ClientCertInvalid,
    /// The client sent an alert, typically because it does not trust our certificate.
    ClientAlert,
    Other,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Failure::Timeout,
        Failure::Closed,
        Failure::NotTls,
        Failure::Incompatible,
        Failure::ClientCertMissing,
        Failure::ClientCertInvalid,
        Failure::ClientAlert,
        Failure::Other,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::NotTls => "not_tls",
            Failure::Incompatible => "incompatible",
            Failure::ClientCertMissing => "client_cert_missing",
            Failure::ClientCertInvalid => "client_cert_invalid",
            Failure::ClientAlert => "client_alert",
            Failure::Other => "other",
        }
    }

    /// The reason of a failed `accept`.
    pub fn of(e: &std::io::Error) -> Failure {
        use rustls::Error as E;
        if let Some(t) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            return match t {
                E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => Failure::NotTls,
                E::PeerIncompatible(_) | E::NoApplicationProtocol => Failure::Incompatible,
                E::NoCertificatesPresented => Failure::ClientCertMissing,
                E::InvalidCertificate(_) => Failure::ClientCertInvalid,
                E::AlertReceived(_) => Failure::ClientAlert,
                _ => Failure::Other,
            };
        }
        match e.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => Failure::Closed,
            std::io::ErrorKind::InvalidData => Failure::NotTls,
            _ => Failure::Other,
        }
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static FAILURES: [AtomicU64; Failure::ALL.len()] = [ZERO; Failure::ALL.len()];
/// Completed handshakes: TLS 1.2 full, resumed, TLS 1.3 full, resumed.
static DONE: [AtomicU64; 4] = [ZERO; 4];

pub fn count_failure(f: Failure) {
    FAILURES[f as usize].fetch_add(1, Relaxed);
}

/// Counts a completed handshake.
pub fn count_done(conn: &rustls::ServerConnection) {
    let v = usize::from(conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3));
    let resumed = usize::from(conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
    DONE[v * 2 + resumed].fetch_add(1, Relaxed);
}

/// The handshake counters in the Prometheus text format.
pub fn render(o: &mut String) {
    o.push_str("# HELP ringmaster_tls_handshakes_total TLS handshakes completed, by version and kind.\n# TYPE ringmaster_tls_handshakes_total counter\n");
    for (v, version) in ["1.2", "1.3"].iter().enumerate() {
        for (k, kind) in ["full", "resumed"].iter().enumerate() {
            let n = DONE[v * 2 + k].load(Relaxed);
            let _ = writeln!(o, "ringmaster_tls_handshakes_total{{version=\"{version}\",kind=\"{kind}\"}} {n}");
        }
    }
    o.push_str("# HELP ringmaster_tls_handshake_failures_total TLS handshakes that failed, by reason.\n# TYPE ringmaster_tls_handshake_failures_total counter\n");
    for f in Failure::ALL {
        let _ = writeln!(o, "ringmaster_tls_handshake_failures_total{{reason=\"{}\"}} {}", f.reason(), FAILURES[f as usize].load(Relaxed));
    }
}
