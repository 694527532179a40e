//! tls against TLS servers the test runs on 127.0.0.1: rustls (TLS 1.2/1.3 only: must never be
//! reported for 1.0/1.1), a minimal responder that accepts only TLS 1.1, and Debian's
//! `openssl s_server -tls1` for a real TLS 1.0 server.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kat_core::object::ObjectType;
use kat_plugins::tls::{Probe, TLS1_0, TLS1_1, probe_version};
use serde_json::json;

use crate::common::{DAY, RealApi, TestCa, ensure_tool, now, run, tls_server};

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn finding_keys(api: &RealApi) -> Vec<String> {
    api.keys(ObjectType::Finding).into_iter().collect()
}

#[test]
fn rustls_server_is_never_reported_for_tls_1_0_or_1_1() {
    let ca = TestCa::new("kat test CA");
    let (cert, key) = ca.leaf(&["localhost"], now() - DAY, now() + 365 * DAY, false);
    let port = tls_server(vec![cert], key, None);
    for v in [TLS1_0, TLS1_1] {
        match probe_version(addr(port), v, Some("localhost"), Duration::from_secs(3)) {
            Probe::NotSupported(why) => assert!(why.contains("alert"), "{why}"),
            other => panic!("TLS {v:#x} against a TLS 1.2/1.3 server: {other:?}"),
        }
    }
    // Nothing listening: inconclusive, not "not supported".
    let closed = crate::common::closed_port();
    assert!(matches!(
        probe_version(addr(closed), TLS1_0, None, Duration::from_secs(1)),
        Probe::Inconclusive(_)
    ));
}

#[test]
fn tls_plugin_reports_and_cleans_up_certificate_findings() {
    let ca = TestCa::new("kat test CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let ca_file = ca_file.to_str().unwrap().to_string();
    let api = RealApi::start();
    let token = api.target_token("tls", "localhost");

    // 1. Self-signed.
    let (cert, key) = ca.leaf(&["localhost"], now() - DAY, now() + 365 * DAY, true);
    let port = tls_server(vec![cert], key, None);
    let target = format!("localhost:{port}");
    let s = run(
        &["tls", &target, "--timeout", "3", "--ca-file", &ca_file],
        &api.env(&token),
    )
    .ok()
    .json();
    assert_eq!(s["reachable"], true, "{s}");
    assert_eq!(s["certificate"]["self_signed"], true, "{s}");
    assert!(
        s["legacy_versions"]["TLS 1.0"]
            .as_str()
            .unwrap()
            .starts_with("not supported"),
        "{s}"
    );
    assert_eq!(
        finding_keys(&api),
        vec!["KAT-SELF-SIGNED|internet|localhost"]
    );

    // 2. A certificate from the trusted test CA that expires in 10 days: the self-signed finding goes.
    let (cert, key) = ca.leaf(&["localhost"], now() - DAY, now() + 10 * DAY, false);
    let port = tls_server(vec![cert], key, None);
    let target = format!("localhost:{port}");
    let s = run(
        &["tls", &target, "--timeout", "3", "--ca-file", &ca_file],
        &api.env(&token),
    )
    .ok()
    .json();
    assert_eq!(s["removed_findings"], 1, "{s}");
    assert_eq!(
        finding_keys(&api),
        vec!["KAT-CERTIFICATE-EXPIRING-SOON|internet|localhost"]
    );
    let f = api
        .get(
            ObjectType::Finding,
            "KAT-CERTIFICATE-EXPIRING-SOON|internet|localhost",
        )
        .unwrap();
    assert!(
        f["description"].as_str().unwrap().contains("in 9 days")
            || f["description"].as_str().unwrap().contains("in 10 days"),
        "{f}"
    );

    // 3. Expired, for another name, from an authority nobody trusts.
    let other = TestCa::new("kat unknown CA");
    let (cert, key) = other.leaf(&["other.test"], now() - 100 * DAY, now() - DAY, false);
    let port = tls_server(vec![cert], key, None);
    let target = format!("localhost:{port}");
    let s = run(
        &["tls", &target, "--timeout", "3", "--ca-file", &ca_file],
        &api.env(&token),
    )
    .ok()
    .json();
    assert_eq!(s["certificate"]["trusted"], false, "{s}");
    assert_eq!(
        finding_keys(&api),
        vec![
            "KAT-CERTIFICATE-EXPIRED|internet|localhost",
            "KAT-CERTIFICATE-HOSTNAME-MISMATCH|internet|localhost",
            "KAT-CERTIFICATE-UNTRUSTED|internet|localhost",
        ]
    );

    // 4. Nothing listening: not reachable, nothing written or removed, exit 0.
    let closed = crate::common::closed_port();
    let s = run(
        &["tls", &format!("localhost:{closed}"), "--timeout", "1"],
        &api.env(&token),
    )
    .ok()
    .json();
    assert_eq!(s["reachable"], false);
    assert_eq!(finding_keys(&api).len(), 3);
}

/// A server that answers a TLS 1.1 ClientHello with a TLS 1.1 ServerHello and anything else with a
/// protocol_version alert: the positive case of the probe without any TLS library.
fn tls11_only_responder() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 2048];
            let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
            let Ok(n) = c.read(&mut buf) else { continue };
            if n < 11 || buf[0] != 0x16 || buf[5] != 1 {
                continue;
            }
            let offered = u16::from_be_bytes([buf[9], buf[10]]);
            if offered == 0x0302 {
                let mut hello = vec![0x02, 0x00, 0x00, 0x26, 0x03, 0x02];
                hello.extend_from_slice(&[0x42; 32]);
                hello.extend_from_slice(&[0x00, 0xc0, 0x13, 0x00]);
                let mut rec = vec![0x16, 0x03, 0x02, 0x00, hello.len() as u8];
                rec.extend_from_slice(&hello);
                let _ = c.write_all(&rec);
            } else {
                let _ = c.write_all(&[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 70]);
            }
        }
    });
    port
}

#[test]
fn probe_recognises_a_tls_1_1_server_hello() {
    let port = tls11_only_responder();
    assert_eq!(
        probe_version(
            addr(port),
            TLS1_1,
            Some("localhost"),
            Duration::from_secs(3)
        ),
        Probe::Supported
    );
    assert_eq!(
        probe_version(
            addr(port),
            TLS1_0,
            Some("localhost"),
            Duration::from_secs(3)
        ),
        Probe::NotSupported("fatal alert protocol_version".into())
    );
    // Through the binary: a KAT-TLS-1.1-SUPPORT finding (no certificate: the handshake fails).
    let api = RealApi::start();
    let token = api.target_token("tls", "localhost");
    let s = run(
        &[
            "tls",
            "localhost",
            "--port",
            &port.to_string(),
            "--timeout",
            "3",
        ],
        &api.env(&token),
    )
    .ok()
    .json();
    assert!(s["handshake"]["error"].is_string(), "{s}");
    assert_eq!(
        finding_keys(&api),
        vec!["KAT-TLS-1.1-SUPPORT|internet|localhost"]
    );
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn openssl_server(
    version_flag: &str,
    dir: &std::path::Path,
    cert: &str,
    key: &str,
) -> (Server, u16) {
    let port = crate::common::closed_port();
    let child = Command::new("openssl")
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
            cert,
            "-key",
            key,
            version_flag,
            "-cipher",
            "ALL:@SECLEVEL=0",
            "-quiet",
        ])
        .current_dir(dir)
        .env("OPENSSL_CONF", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr(port)).is_err() {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

#[test]
fn openssl_tls_1_0_and_1_1_servers_are_reported() {
    if !ensure_tool("openssl") {
        return;
    }
    let ca = TestCa::new("kat test CA");
    let (cert, key) = ca.leaf(&["localhost"], now() - DAY, now() + 365 * DAY, false);
    let dir = tempfile::tempdir().unwrap();
    let cert_pem = dir.path().join("cert.pem");
    let key_pem = dir.path().join("key.pem");
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64_encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    std::fs::write(&cert_pem, pem("CERTIFICATE", cert.as_ref())).unwrap();
    std::fs::write(&key_pem, pem("PRIVATE KEY", key.secret_der())).unwrap();
    let (c, k) = (cert_pem.to_str().unwrap(), key_pem.to_str().unwrap());

    let (_s10, p10) = openssl_server("-tls1", dir.path(), c, k);
    assert_eq!(
        probe_version(addr(p10), TLS1_0, Some("localhost"), Duration::from_secs(5)),
        Probe::Supported
    );
    match probe_version(addr(p10), TLS1_1, Some("localhost"), Duration::from_secs(5)) {
        Probe::NotSupported(_) => {}
        other => panic!("a TLS 1.0-only server and a TLS 1.1 hello: {other:?}"),
    }
    let (_s11, p11) = openssl_server("-tls1_1", dir.path(), c, k);
    assert_eq!(
        probe_version(addr(p11), TLS1_1, Some("localhost"), Duration::from_secs(5)),
        Probe::Supported
    );

    let api = RealApi::start();
    let token = api.target_token("tls", "localhost");
    let s = run(
        &["tls", &format!("localhost:{p10}"), "--timeout", "5"],
        &api.env(&token),
    )
    .ok()
    .json();
    assert_eq!(s["legacy_versions"]["TLS 1.0"], "supported", "{s}");
    assert_eq!(
        finding_keys(&api),
        vec!["KAT-TLS-1.0-SUPPORT|internet|localhost"]
    );
    let f = api
        .get(
            ObjectType::Finding,
            "KAT-TLS-1.0-SUPPORT|internet|localhost",
        )
        .unwrap();
    assert_eq!(f["hostname"], json!("internet|localhost"));
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
