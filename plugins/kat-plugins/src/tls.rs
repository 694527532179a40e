//! `tls <hostname>`: look at a TLS server's certificate and at the old protocol versions it accepts.
//!
//! - The certificate chain comes from a real TLS 1.2/1.3 handshake (rustls) whose verifier records
//!   the chain instead of judging it; the chain is then judged on its own ([`analyze_chain`]):
//!   KAT-CERTIFICATE-EXPIRED, KAT-CERTIFICATE-EXPIRING-SOON (< 30 days), KAT-SELF-SIGNED (the
//!   certificate's issuer is its own subject), KAT-CERTIFICATE-UNTRUSTED (not self-signed, and the
//!   chain does not verify against the Mozilla root store compiled in from webpki-roots) and
//!   KAT-CERTIFICATE-HOSTNAME-MISMATCH (not valid for the name connected to).
//! - rustls cannot speak TLS 1.0 or 1.1, so each is probed with a hand-built ClientHello of that
//!   version over a plain TCP connection ([`client_hello`]); a ServerHello of the same version
//!   ([`classify_server_hello`]) means the server accepts it: KAT-TLS-1.0-SUPPORT,
//!   KAT-TLS-1.1-SUPPORT.
//!
//! Findings that no longer apply are removed by explicit id, but only for checks that were conclusive
//! this time (a certificate was seen; a probe got an answer).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::api::ApiClient;
use crate::cli::Args;
use crate::findings::{
    self, CERTIFICATE_EXPIRED, CERTIFICATE_EXPIRING_SOON, CERTIFICATE_HOSTNAME_MISMATCH,
    CERTIFICATE_UNTRUSTED, Finding, SELF_SIGNED, TLS_1_0_SUPPORT, TLS_1_1_SUPPORT,
};
use crate::names::{Subject, parse_target};
use crate::portscan::utc_string;
use crate::{Error, Result};

/// A certificate expiring within this many days gets KAT-CERTIFICATE-EXPIRING-SOON.
pub const EXPIRING_SOON_DAYS: i64 = 30;

/// TLS 1.0's version number on the wire.
pub const TLS1_0: u16 = 0x0301;
/// TLS 1.1's version number on the wire.
pub const TLS1_1: u16 = 0x0302;

/// A protocol version's name.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL 3.0".into(),
        0x0301 => "TLS 1.0".into(),
        0x0302 => "TLS 1.1".into(),
        0x0303 => "TLS 1.2".into(),
        0x0304 => "TLS 1.3".into(),
        other => format!("version 0x{other:04x}"),
    }
}

fn alert_name(d: u8) -> String {
    match d {
        0 => "close_notify".into(),
        10 => "unexpected_message".into(),
        20 => "bad_record_mac".into(),
        40 => "handshake_failure".into(),
        47 => "illegal_parameter".into(),
        50 => "decode_error".into(),
        70 => "protocol_version".into(),
        71 => "insufficient_security".into(),
        80 => "internal_error".into(),
        86 => "inappropriate_fallback".into(),
        112 => "unrecognized_name".into(),
        other => format!("alert {other}"),
    }
}

/// A TLS 1.0/1.1-style ClientHello record offering `version`: CBC suites with ECDHE, DHE and RSA key
/// exchange (what such servers speak), the renegotiation SCSV, SNI when `sni` is a name, and the
/// elliptic-curve extensions.
pub fn client_hello(version: u16, sni: Option<&str>, random: &[u8; 32]) -> Vec<u8> {
    const SUITES: [u16; 10] = [
        0xc014, // ECDHE-RSA-AES256-SHA
        0xc013, // ECDHE-RSA-AES128-SHA
        0xc00a, // ECDHE-ECDSA-AES256-SHA
        0xc009, // ECDHE-ECDSA-AES128-SHA
        0x0039, // DHE-RSA-AES256-SHA
        0x0033, // DHE-RSA-AES128-SHA
        0x0035, // AES256-SHA
        0x002f, // AES128-SHA
        0x000a, // DES-CBC3-SHA
        0x00ff, // TLS_EMPTY_RENEGOTIATION_INFO_SCSV
    ];
    let u16b = |v: u16| v.to_be_bytes();
    let mut ext = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        ext.extend_from_slice(&u16b(0x0000));
        ext.extend_from_slice(&u16b((n.len() + 5) as u16));
        ext.extend_from_slice(&u16b((n.len() + 3) as u16));
        ext.push(0); // host_name
        ext.extend_from_slice(&u16b(n.len() as u16));
        ext.extend_from_slice(n);
    }
    // supported_groups (elliptic_curves): x25519, secp256r1, secp384r1.
    ext.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18,
    ]);
    // ec_point_formats: uncompressed.
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    let mut body = Vec::new();
    body.extend_from_slice(&u16b(version));
    body.extend_from_slice(random);
    body.push(0); // no session id
    body.extend_from_slice(&u16b((SUITES.len() * 2) as u16));
    for s in SUITES {
        body.extend_from_slice(&u16b(s));
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    body.extend_from_slice(&u16b(ext.len() as u16));
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8]; // client_hello
    let len = body.len() as u32;
    hs.extend_from_slice(&len.to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16b(hs.len() as u16));
    rec.extend_from_slice(&hs);
    rec
}

/// What a protocol-version probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The server answered with a ServerHello of the offered version.
    Supported,
    /// The server refused the version (an alert, another version, a closed connection).
    NotSupported(String),
    /// No conclusion (no connection, no answer in time).
    Inconclusive(String),
}

impl Probe {
    /// One line for the summary.
    pub fn describe(&self) -> String {
        match self {
            Probe::Supported => "supported".into(),
            Probe::NotSupported(why) => format!("not supported: {why}"),
            Probe::Inconclusive(why) => format!("inconclusive: {why}"),
        }
    }
}

/// Judge the first bytes a server sent back to a ClientHello offering `offered`.
pub fn classify_server_hello(offered: u16, response: &[u8]) -> Probe {
    if response.is_empty() {
        return Probe::NotSupported("the server closed the connection without answering".into());
    }
    if response.starts_with(b"HTTP/") {
        return Probe::NotSupported("not a TLS server (it answers HTTP)".into());
    }
    if response.len() < 5 {
        return Probe::NotSupported(format!("a short answer of {} bytes", response.len()));
    }
    let len = usize::from(u16::from_be_bytes([response[3], response[4]]));
    let frag = &response[5..response.len().min(5 + len)];
    match response[0] {
        0x15 => match frag {
            [level, desc, ..] => Probe::NotSupported(format!(
                "{} alert {}",
                if *level == 2 { "fatal" } else { "warning" },
                alert_name(*desc)
            )),
            _ => Probe::NotSupported("a truncated alert".into()),
        },
        0x16 => match frag {
            [2, _, _, _, hi, lo, ..] => {
                let v = u16::from_be_bytes([*hi, *lo]);
                if v == offered {
                    Probe::Supported
                } else {
                    Probe::NotSupported(format!("the server chose {} instead", version_name(v)))
                }
            }
            [t, ..] if *t != 2 => Probe::NotSupported(format!(
                "the server sent handshake message {t}, not a ServerHello"
            )),
            _ => Probe::NotSupported("a truncated ServerHello".into()),
        },
        t => Probe::NotSupported(format!("not a TLS answer (record type {t})")),
    }
}

fn random32() -> [u8; 32] {
    use ring::rand::SecureRandom;
    let mut r = [0u8; 32];
    if ring::rand::SystemRandom::new().fill(&mut r).is_err() {
        // Not a secret: any value works for a probe.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        r[..16].copy_from_slice(&t.to_be_bytes());
    }
    r
}

/// Offer `version` to `addr` and judge the answer.
pub fn probe_version(
    addr: SocketAddr,
    version: u16,
    sni: Option<&str>,
    timeout: Duration,
) -> Probe {
    let mut sock = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return Probe::Inconclusive(format!("cannot connect to {addr}: {e}")),
    };
    let deadline = Instant::now() + timeout;
    let _ = sock.set_write_timeout(Some(timeout));
    if let Err(e) = sock.write_all(&client_hello(version, sni, &random32())) {
        return Probe::Inconclusive(format!("cannot send the ClientHello: {e}"));
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        // Enough to judge: the record header plus an alert, or a ServerHello up to its version.
        if buf.len() >= 11 || (buf.len() >= 7 && buf[0] == 0x15) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            if buf.is_empty() {
                return Probe::Inconclusive(format!(
                    "no answer within {:.1} s",
                    timeout.as_secs_f64()
                ));
            }
            break;
        }
        let _ = sock.set_read_timeout(Some(left));
        match sock.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if buf.is_empty() {
                    return Probe::Inconclusive(format!(
                        "no answer within {:.1} s",
                        timeout.as_secs_f64()
                    ));
                }
                break;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) && buf.is_empty() => {
                return Probe::NotSupported("the server reset the connection".into());
            }
            Err(e) => {
                if buf.is_empty() {
                    return Probe::Inconclusive(format!("reading the answer: {e}"));
                }
                break;
            }
        }
    }
    classify_server_hello(version, &buf)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A verifier that accepts any chain and remembers it (the handshake signature is still checked, so
/// the chain belongs to the server that answered).
#[derive(Debug)]
struct RecordingVerifier {
    chain: Mutex<Vec<CertificateDer<'static>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        if let Ok(mut g) = self.chain.lock() {
            *g = chain;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What the TLS 1.2/1.3 handshake gave.
#[derive(Debug, Clone, Default)]
pub struct Handshake {
    /// The certificates the server sent, leaf first (empty when it sent none).
    pub chain: Vec<CertificateDer<'static>>,
    /// The negotiated version.
    pub version: Option<String>,
    /// The negotiated cipher suite.
    pub cipher: Option<String>,
    /// Why the handshake failed, if it did.
    pub error: Option<String>,
}

/// Shake hands with `addr` (TLS 1.2 or 1.3) and record the chain.
pub fn handshake(
    addr: SocketAddr,
    server_name: ServerName<'static>,
    timeout: Duration,
) -> Handshake {
    let mut out = Handshake::default();
    let verifier = Arc::new(RecordingVerifier {
        chain: Mutex::new(Vec::new()),
        provider: provider(),
    });
    let config = match rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    {
        Ok(b) => b
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        Err(e) => {
            out.error = Some(format!("TLS configuration: {e}"));
            return out;
        }
    };
    let mut conn = match rustls::ClientConnection::new(Arc::new(config), server_name) {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("TLS client: {e}"));
            return out;
        }
    };
    let result = (|| -> std::result::Result<(), String> {
        let mut sock = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let deadline = Instant::now() + timeout;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "handshake not done within {:.1} s",
                    timeout.as_secs_f64()
                ));
            }
            let _ = sock.set_read_timeout(Some(left));
            let _ = sock.set_write_timeout(Some(left));
            match conn.complete_io(&mut sock) {
                Ok((0, 0)) if conn.is_handshaking() => {
                    return Err("the server closed the connection during the handshake".into());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("handshake failed: {e}")),
            }
        }
        conn.send_close_notify();
        let _ = conn.complete_io(&mut sock);
        Ok(())
    })();
    out.error = result.err();
    out.version = conn.protocol_version().map(|v| format!("{v:?}"));
    out.cipher = conn
        .negotiated_cipher_suite()
        .map(|c| format!("{:?}", c.suite()));
    if let Ok(g) = verifier.chain.lock() {
        out.chain = g.clone();
    }
    out
}

/// What the leaf certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// Serial number (hex).
    pub serial: String,
    /// Not valid before (Unix time).
    pub not_before: i64,
    /// Not valid after (Unix time).
    pub not_after: i64,
    /// DNS names and IP addresses of its subjectAltName.
    pub names: Vec<String>,
    /// Issuer and subject are the same name.
    pub self_issued: bool,
    /// Its signature verifies with its own key.
    pub self_signature_valid: bool,
}

/// The verdict on a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// The leaf.
    pub leaf: CertInfo,
    /// How many certificates the server sent.
    pub chain_len: usize,
    /// `None` when the chain verifies against the roots, else why not.
    pub untrusted: Option<String>,
    /// Whether the leaf is valid for the name connected to.
    pub name_valid: bool,
    /// The findings.
    pub findings: Vec<Finding>,
}

fn cert_error_text(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "unknown issuer (no chain to a trusted root was sent)".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => {
            "a signature in the chain does not verify".into()
        }
        rustls::Error::InvalidCertificate(c) => format!("{c:?}"),
        other => other.to_string(),
    }
}

fn days(secs: i64) -> i64 {
    secs.div_euclid(86_400)
}

/// Judge a chain (leaf first) for `subject` at Unix time `now`, against `roots`.
///
/// # Errors
/// When there is no certificate or the leaf cannot be parsed.
pub fn analyze_chain(
    chain: &[CertificateDer<'static>],
    subject: &Subject,
    now: i64,
    roots: Arc<RootCertStore>,
) -> Result<ChainReport> {
    let leaf_der = chain
        .first()
        .ok_or_else(|| Error::new("the server sent no certificate"))?;
    let (_, x509) = X509Certificate::from_der(leaf_der.as_ref())
        .map_err(|e| Error::new(format!("cannot parse the server's certificate: {e}")))?;
    let names: Vec<String> = match x509.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(d) => Some(format!("DNS:{d}")),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b)
                        .ok()
                        .map(|a| format!("IP:{}", std::net::Ipv4Addr::from(a))),
                    16 => <[u8; 16]>::try_from(*b)
                        .ok()
                        .map(|a| format!("IP:{}", std::net::Ipv6Addr::from(a))),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let leaf = CertInfo {
        subject: x509.subject().to_string(),
        issuer: x509.issuer().to_string(),
        serial: x509.raw_serial_as_string(),
        not_before: x509.validity().not_before.timestamp(),
        not_after: x509.validity().not_after.timestamp(),
        names,
        self_issued: x509.subject().as_raw() == x509.issuer().as_raw(),
        self_signature_valid: x509.verify_signature(None).is_ok(),
    };
    let server_name: ServerName<'static> = match subject {
        Subject::Hostname(h) => ServerName::try_from(h.clone())
            .map_err(|e| Error::new(format!("{h} is not a TLS server name: {e}")))?,
        Subject::Address(ip) => ServerName::IpAddress((*ip).into()),
    };
    // Trust is judged at a moment inside the leaf's validity, so that an expired certificate from a
    // trusted CA is "expired", not also "untrusted".
    let at = now.clamp(leaf.not_before, leaf.not_after).max(0) as u64;
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| Error::new(format!("cannot build the certificate verifier: {e}")))?;
    let verdict = verifier.verify_server_cert(
        leaf_der,
        &chain[1..],
        &server_name,
        &[],
        UnixTime::since_unix_epoch(Duration::from_secs(at)),
    );
    let untrusted = match &verdict {
        Ok(_) => None,
        Err(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => None,
        Err(e) => Some(cert_error_text(e)),
    };
    let name_valid = webpki::EndEntityCert::try_from(leaf_der)
        .map(|ee| ee.verify_is_valid_for_subject_name(&server_name).is_ok())
        .unwrap_or(false);
    let host = subject.host(false);
    let who = format!(
        "The certificate of {host} (subject {:?}, issuer {:?})",
        leaf.subject, leaf.issuer
    );
    let mut f = Vec::new();
    if now > leaf.not_after {
        f.push(Finding::new(
            CERTIFICATE_EXPIRED,
            subject.clone(),
            format!(
                "{who} expired on {} ({} days ago).",
                utc_string(leaf.not_after),
                days(now - leaf.not_after)
            ),
        ));
    } else if leaf.not_after - now < EXPIRING_SOON_DAYS * 86_400 {
        f.push(Finding::new(
            CERTIFICATE_EXPIRING_SOON,
            subject.clone(),
            format!(
                "{who} expires on {}, in {} days (less than {EXPIRING_SOON_DAYS}).",
                utc_string(leaf.not_after),
                days(leaf.not_after - now)
            ),
        ));
    }
    if leaf.self_issued {
        f.push(Finding::new(
            SELF_SIGNED,
            subject.clone(),
            format!(
                "{who} is self-signed: its issuer is its own subject{}.",
                if leaf.self_signature_valid {
                    " and it is signed with its own key"
                } else {
                    ""
                }
            ),
        ));
    } else if let Some(why) = &untrusted {
        f.push(Finding::new(
            CERTIFICATE_UNTRUSTED,
            subject.clone(),
            format!("{who} does not chain to a trusted root certificate: {why}."),
        ));
    }
    if !name_valid {
        f.push(Finding::new(
            CERTIFICATE_HOSTNAME_MISMATCH,
            subject.clone(),
            format!(
                "{who} is not valid for {host}; it names {}.",
                if leaf.names.is_empty() {
                    "no DNS name or address (no subjectAltName)".to_string()
                } else {
                    leaf.names.join(", ")
                }
            ),
        ));
    }
    Ok(ChainReport {
        leaf,
        chain_len: chain.len(),
        untrusted,
        name_valid,
        findings: f,
    })
}

/// Mozilla's roots (webpki-roots), plus the certificates of a PEM file when given.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn root_store(extra_pem: Option<&str>) -> Result<RootCertStore> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::usage(format!("--ca-file {path}: {e}")))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::usage(format!("--ca-file {path}: {e}")))?;
        if certs.is_empty() {
            return Err(Error::usage(format!(
                "--ca-file {path}: no certificate in it"
            )));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(Error::usage(format!(
                "--ca-file {path}: no usable CA certificate"
            )));
        }
    }
    Ok(roots)
}

/// Resolve a target to socket addresses.
///
/// # Errors
/// When the name does not resolve.
pub fn resolve_target(
    subject: &Subject,
    port: u16,
) -> std::result::Result<Vec<SocketAddr>, String> {
    match subject {
        Subject::Address(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Subject::Hostname(h) => (h.as_str(), port)
            .to_socket_addrs()
            .map(Iterator::collect)
            .map_err(|e| format!("cannot resolve {h}: {e}")),
    }
}

/// `tls <hostname>[:port] [--port N] [--timeout SECS] [--ca-file PEM] [--no-legacy] [--no-cleanup]`.
///
/// # Errors
/// Bad arguments or a failing API request.
pub fn run(args: &[String]) -> Result<Value> {
    let a = Args::parse(
        args,
        &["port", "timeout", "ca-file"],
        &["no-legacy", "no-cleanup"],
    )?;
    let (subject, mut port) =
        parse_target(a.one_positional("hostname")?, 443).map_err(Error::usage)?;
    if a.option("port").is_some() {
        port = a.number("port", 443, 1, 65535)? as u16;
    }
    let timeout = a.seconds("timeout", Duration::from_secs(10), 120.0)?;
    let roots = Arc::new(root_store(a.option("ca-file"))?);
    let api = ApiClient::from_env()?;
    let host = subject.host(false);
    let target = format!("{}:{port}", subject.host(true));
    let unreachable = |why: String| {
        eprintln!("kat-plugins tls: {target}: {why}; nothing to check");
        json!({"plugin": "tls", "target": target, "reachable": false, "error": why, "findings": []})
    };
    let addrs = match resolve_target(&subject, port) {
        Ok(a) if !a.is_empty() => a,
        Ok(_) => return Ok(unreachable(format!("{host} has no address"))),
        Err(e) => return Ok(unreachable(e)),
    };
    let Some(addr) = addrs
        .iter()
        .copied()
        .find(|a| TcpStream::connect_timeout(a, timeout).is_ok())
    else {
        return Ok(unreachable(format!(
            "no connection to {}",
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let server_name: ServerName<'static> = match &subject {
        Subject::Hostname(h) => ServerName::try_from(h.clone())
            .map_err(|e| Error::usage(format!("{h} is not a TLS server name: {e}")))?,
        Subject::Address(ip) => ServerName::IpAddress((*ip).into()),
    };
    let hs = handshake(addr, server_name, timeout);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut found = Vec::new();
    let mut managed: Vec<&'static str> = Vec::new();
    let mut cert_json = Value::Null;
    if !hs.chain.is_empty() {
        match analyze_chain(&hs.chain, &subject, now, roots) {
            Ok(r) => {
                managed.extend([
                    CERTIFICATE_EXPIRED,
                    CERTIFICATE_EXPIRING_SOON,
                    SELF_SIGNED,
                    CERTIFICATE_UNTRUSTED,
                    CERTIFICATE_HOSTNAME_MISMATCH,
                ]);
                cert_json = json!({
                    "subject": r.leaf.subject, "issuer": r.leaf.issuer, "serial": r.leaf.serial,
                    "not_before": utc_string(r.leaf.not_before), "not_after": utc_string(r.leaf.not_after),
                    "days_left": days(r.leaf.not_after - now), "names": r.leaf.names,
                    "self_signed": r.leaf.self_issued, "chain_length": r.chain_len,
                    "trusted": r.untrusted.is_none(), "untrusted_reason": r.untrusted,
                    "valid_for_name": r.name_valid,
                });
                found.extend(r.findings);
            }
            Err(e) => cert_json = json!({"error": e.to_string()}),
        }
    }
    let sni = match &subject {
        Subject::Hostname(h) => Some(h.as_str()),
        Subject::Address(_) => None,
    };
    let mut legacy = serde_json::Map::new();
    if !a.flag("no-legacy") {
        for (v, code) in [(TLS1_0, TLS_1_0_SUPPORT), (TLS1_1, TLS_1_1_SUPPORT)] {
            let p = probe_version(addr, v, sni, timeout);
            legacy.insert(version_name(v), Value::String(p.describe()));
            match p {
                Probe::Supported => {
                    managed.push(code);
                    found.push(Finding::new(
                        code,
                        subject.clone(),
                        format!(
                            "The server at {target} accepts {0}: it answered a {0} ClientHello with a {0} ServerHello.",
                            version_name(v)
                        ),
                    ));
                }
                Probe::NotSupported(_) => managed.push(code),
                Probe::Inconclusive(_) => {}
            }
        }
    }
    let cleanup = !a.flag("no-cleanup");
    let report = findings::sync(&api, &subject, &found, &managed, cleanup)?;
    Ok(json!({
        "plugin": "tls",
        "target": target,
        "address": addr.to_string(),
        "reachable": true,
        "handshake": {"version": hs.version, "cipher": hs.cipher, "error": hs.error},
        "certificate": cert_json,
        "legacy_versions": legacy,
        "findings": found.iter().map(|f| json!({"finding_type": f.code, "id": f.key(), "description": f.description})).collect::<Vec<_>>(),
        "cleanup": cleanup,
        "stale_findings": report.removed_ids,
        "removed_findings": report.removed,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_layout() {
        let r = [7u8; 32];
        let h = client_hello(TLS1_1, Some("example.com"), &r);
        assert_eq!(&h[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(usize::from(u16::from_be_bytes([h[3], h[4]])), h.len() - 5);
        assert_eq!(h[5], 1);
        let hs_len = u32::from_be_bytes([0, h[6], h[7], h[8]]) as usize;
        assert_eq!(hs_len, h.len() - 9);
        assert_eq!(&h[9..11], &[0x03, 0x02]);
        assert_eq!(&h[11..43], &r);
        assert!(h.windows(11).any(|w| w == b"example.com"));
        let no_sni = client_hello(TLS1_0, None, &r);
        assert_eq!(&no_sni[9..11], &[0x03, 0x01]);
        assert!(no_sni.len() < h.len());
    }

    #[test]
    fn server_hello_classification() {
        let hello = |v: u16| {
            let [hi, lo] = v.to_be_bytes();
            vec![
                0x16, 0x03, 0x01, 0x00, 0x30, 0x02, 0x00, 0x00, 0x2c, hi, lo, 0, 0,
            ]
        };
        assert_eq!(
            classify_server_hello(TLS1_0, &hello(TLS1_0)),
            Probe::Supported
        );
        assert_eq!(
            classify_server_hello(TLS1_1, &hello(TLS1_1)),
            Probe::Supported
        );
        assert_eq!(
            classify_server_hello(TLS1_1, &hello(TLS1_0)),
            Probe::NotSupported("the server chose TLS 1.0 instead".into())
        );
        assert_eq!(
            classify_server_hello(TLS1_0, &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 70]),
            Probe::NotSupported("fatal alert protocol_version".into())
        );
        assert_eq!(
            classify_server_hello(TLS1_0, &[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 40]),
            Probe::NotSupported("fatal alert handshake_failure".into())
        );
        assert!(matches!(
            classify_server_hello(TLS1_0, b""),
            Probe::NotSupported(_)
        ));
        assert!(
            matches!(classify_server_hello(TLS1_0, b"HTTP/1.1 400 Bad"), Probe::NotSupported(s) if s.contains("HTTP"))
        );
        assert!(
            matches!(classify_server_hello(TLS1_0, &[0x16, 3, 1, 0, 4, 0x0b, 0, 0, 0]), Probe::NotSupported(s) if s.contains("message 11"))
        );
        assert!(matches!(
            classify_server_hello(TLS1_0, &[0x16, 3, 1]),
            Probe::NotSupported(_)
        ));
        assert!(
            matches!(classify_server_hello(TLS1_0, &[0x16, 3, 1, 0, 9, 2, 0]), Probe::NotSupported(s) if s.contains("truncated"))
        );
    }
}
