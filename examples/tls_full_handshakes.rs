//! Load generator for full TLS handshakes: CONNS concurrent clients, each
//! connecting, doing a full TLS 1.3 handshake (session resumption off, so every
//! connection signs and verifies a certificate and runs a key exchange), one
//! `GET /small` with `Connection: close`, then closing. wrk resumes sessions,
//! so this is what measures "new handshakes per second".
//!
//! usage: tls_full_handshakes HOST:PORT DURATION_S CA_FILE   (env CONNS, default 64)
//! Prints one `RESULT {json}` line in the shared harness's format.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Accepts exactly the expected certificate and checks the handshake signature
/// made with its key. (The harness certificate is a self-signed CA, which
/// webpki refuses as an end entity.)
#[derive(Debug)]
struct Pinned {
    expected: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("unexpected certificate".into()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (addr, secs, ca) = (args[1].clone(), args[2].parse::<u64>().unwrap(), &args[3]);
    let conns: usize = std::env::var("CONNS").ok().and_then(|c| c.parse().ok()).unwrap_or(64);
    let expected: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca).unwrap().map(|c| c.unwrap()).collect();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(Pinned { expected: expected[0].clone(), provider: provider.clone() });
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (lat, bytes, errors, elapsed) = rt.block_on(async move {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let mut tasks = Vec::new();
        for _ in 0..conns {
            let (connector, addr) = (connector.clone(), addr.clone());
            tasks.push(tokio::spawn(async move {
                let (mut lat, mut bytes, mut errors) = (Vec::new(), 0u64, 0u64);
                let name = ServerName::try_from("localhost").unwrap();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let one = async {
                        let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
                        tcp.set_nodelay(true)?;
                        let mut tls = connector.connect(name.clone(), tcp).await?;
                        tls.write_all(b"GET /small HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await?;
                        let mut buf = Vec::with_capacity(512);
                        let _ = tls.read_to_end(&mut buf).await;
                        if !buf.starts_with(b"HTTP/1.1 200") {
                            return Err(std::io::Error::other("not a 200"));
                        }
                        Ok::<u64, std::io::Error>(buf.len() as u64)
                    };
                    match tokio::time::timeout(Duration::from_secs(5), one).await {
                        Ok(Ok(n)) => {
                            bytes += n;
                            lat.push(t.elapsed().as_micros() as u64);
                        }
                        Ok(Err(e)) => {
                            if errors == 0 {
                                println!("first error: {e}");
                            }
                            errors += 1
                        }
                        Err(_) => errors += 1,
                    }
                }
                (lat, bytes, errors)
            }));
        }
        let (mut lat, mut bytes, mut errors) = (Vec::new(), 0, 0);
        for t in tasks {
            let (l, b, e) = t.await.unwrap();
            lat.extend(l);
            bytes += b;
            errors += e;
        }
        (lat, bytes, errors, start.elapsed().as_secs_f64())
    });
    let mut lat = lat;
    lat.sort_unstable();
    let pct = |q: f64| if lat.is_empty() { 0 } else { lat[((q / 100.0) * lat.len() as f64) as usize] };
    let n = lat.len();
    let mean = if n > 0 { lat.iter().sum::<u64>() as f64 / n as f64 } else { 0.0 };
    println!(
        "RESULT {{\"tool\":\"tls_full_handshakes\",\"requests\":{n},\"duration_s\":{elapsed:.6},\"rps\":{:.1},\"bytes\":{bytes},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"mean_us\":{mean:.1},\"err_connect\":0,\"err_read\":{errors},\"err_write\":0,\"err_status\":0,\"err_timeout\":0}}",
        n as f64 / elapsed,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        lat.last().copied().unwrap_or(0),
    );
}
