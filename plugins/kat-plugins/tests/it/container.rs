//! The plugins inside the real `kat-plugins:latest` image (built by scripts/plugin-image.sh: a static
//! binary in a FROM scratch image), run by Docker with the host's network against the real API and
//! servers on 127.0.0.1. Skipped (with a message) when Docker or the image is missing, unless
//! `KAT_PLUGINS_IMAGE_TESTS=1`, which makes their absence a failure.

use std::process::{Command, Stdio};

use kat_core::object::ObjectType;
use kat_core::plan::PlanInput;

use crate::common::{DAY, Listener, RealApi, TestCa, now, tls_server};

const IMAGE: &str = "kat-plugins:latest";

fn image_available() -> bool {
    let ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = format!("docker or the image {IMAGE} is missing (run scripts/plugin-image.sh)");
        assert!(
            std::env::var("KAT_PLUGINS_IMAGE_TESTS").as_deref() != Ok("1"),
            "{msg}"
        );
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

/// `docker run` the image hardened as the runtime does it (read-only root, nobody, no capabilities).
fn docker_run(api: &RealApi, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "host",
            "--read-only",
            "--user",
            "65534:65534",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-e",
            &format!("OPENKAT_API={}", api.base),
            "-e",
            &format!("OPENKAT_TOKEN={token}"),
            IMAGE,
            "/kat-plugins",
        ])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugins_run_in_the_scratch_image() {
    if !image_available() {
        return;
    }
    let api = RealApi::start();

    // dns: the hosts file and the API, from inside the container.
    let token = api.target_token("dns", "localhost");
    let (code, out, err) = docker_run(
        &api,
        &token,
        &["dns", "localhost", "--nameserver", "127.0.0.1:9"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        api.keys(ObjectType::DnsARecord)
            .contains("internet|localhost|internet|127.0.0.1")
    );

    // portscan, then parse-nmap of its output.
    let l = Listener::start("127.0.0.1:0", Some(b"SSH-2.0-OpenSSH_9.2p1\r\n"), None).unwrap();
    let (code, xml, err) = docker_run(
        &api,
        "unused",
        &["portscan", "127.0.0.1", "--ports", &l.port.to_string()],
    );
    assert_eq!(code, 0, "{err}");
    assert!(xml.contains(&format!("portid=\"{}\"", l.port)), "{xml}");
    let id = api.put_file("portscan", xml.into_bytes());
    let token = api.task_token("parse-nmap", PlanInput::Files(vec![id]));
    let (code, out, err) = docker_run(&api, &token, &["parse-nmap", &id.to_string()]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        api.keys(ObjectType::IpPort)
            .contains(&format!("internet|127.0.0.1|TCP|{}", l.port))
    );

    // tls: rustls, x509 parsing and the compiled-in roots in a static binary.
    let ca = TestCa::new("kat test CA");
    let (cert, key) = ca.leaf(&["localhost"], now() - DAY, now() + 365 * DAY, true);
    let port = tls_server(vec![cert], key, None);
    let token = api.target_token("tls", "localhost");
    let (code, out, err) = docker_run(
        &api,
        &token,
        &["tls", &format!("localhost:{port}"), "--timeout", "3"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        api.keys(ObjectType::Finding)
            .contains("KAT-SELF-SIGNED|internet|localhost"),
        "{out}"
    );
}
