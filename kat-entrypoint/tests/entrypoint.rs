//! End-to-end tests of the real `kat-entrypoint` binary against a real HTTP server on 127.0.0.1.
//! The commands are the host's `sh` and coreutils.

#![allow(clippy::unwrap_used)]

mod support;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use support::{PLUGIN, Server, TOKEN, env_for, leftovers, run, sha256_hex, start, wait_for};

const CONFIG: i32 = 121;
const DOWNLOAD: i32 = 122;
const UPLOAD: i32 = 123;
const OUTPUT_LIMIT: i32 = 124;

/// Arguments and extra environment for one run.
type Scenario<'a> = (Vec<String>, Vec<(&'a str, String)>);
/// Arguments, extra environment and the expected message.
type ConfigCase<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);

struct Fixture {
    server: Server,
    spool: tempfile::TempDir,
    scratch: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            server: Server::start(),
            spool: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        }
    }

    fn env(&self) -> Vec<(String, OsString)> {
        env_for(&self.server, self.spool.path())
    }

    fn env_with(&self, extra: &[(&str, &str)]) -> Vec<(String, OsString)> {
        let mut env = self.env();
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push(((*k).to_owned(), (*v).into()));
        }
        env
    }

    fn marker(&self, name: &str) -> String {
        self.scratch
            .path()
            .join(name)
            .to_string_lossy()
            .into_owned()
    }

    /// The server saw no protocol violation and the work directory is gone.
    fn check_clean(&self) {
        assert_eq!(
            self.server.errors(),
            Vec::<String>::new(),
            "server-side protocol errors"
        );
        assert_eq!(
            leftovers(self.spool.path()),
            Vec::<std::path::PathBuf>::new(),
            "work dir not removed"
        );
    }
}

#[test]
fn exit_zero_uploads_stdout_as_multipart() {
    let f = Fixture::new();
    let out = run(
        &["sh", "-c", "printf 'hello\\r\\n--x'; echo to-stderr >&2"],
        &f.env(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 1);
    let u = &uploads[0];
    assert_eq!(u.target, "/api/v1/file/");
    assert_eq!(u.auth.as_deref(), Some(format!("Token {TOKEN}").as_str()));
    assert_eq!(u.type_field, PLUGIN);
    assert_eq!(u.filename, "stdout");
    assert_eq!(u.part_content_type, "application/octet-stream");
    assert_eq!(u.head, b"hello\r\n--x");
    assert!(
        out.stderr
            .contains("uploaded stdout (10 bytes, type=test-plugin) -> 201"),
        "{}",
        out.stderr
    );
    // Our stderr carries only our own log lines in upload mode.
    assert!(
        out.stderr
            .lines()
            .all(|l| l.starts_with("kat-entrypoint: ")),
        "{}",
        out.stderr
    );
    f.check_clean();
}

#[test]
fn upload_url_is_used_as_given() {
    let f = Fixture::new();
    let url = format!("{}/file/?task_id=0b0e7c2a", f.server.api());
    let out = run(&["echo", "x"], &f.env_with(&[("UPLOAD_URL", &url)]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        f.server.accepted()[0].target,
        "/api/v1/file/?task_id=0b0e7c2a"
    );
    f.check_clean();
}

#[test]
fn exit_zero_with_empty_stdout_uploads_nothing() {
    let f = Fixture::new();
    let out = run(&["sh", "-c", "echo only-stderr >&2"], &f.env());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.server.upload_attempts(), 0);
    assert!(
        out.stderr.contains("no stdout, nothing to upload"),
        "{}",
        out.stderr
    );
    f.check_clean();
}

#[test]
fn non_zero_exit_uploads_stderr_as_error_and_keeps_the_code() {
    let f = Fixture::new();
    for code in [1, 2] {
        let script = format!("echo ignored-stdout; echo failed-with-{code} >&2; exit {code}");
        let out = run(&["sh", "-c", &script], &f.env());
        assert_eq!(out.code, code, "{}", out.stderr);
    }
    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 2);
    for (u, code) in uploads.iter().zip([1, 2]) {
        assert_eq!(
            (u.type_field.as_str(), u.filename.as_str()),
            ("error", "stderr")
        );
        assert_eq!(u.text(), format!("failed-with-{code}\n"));
    }
    f.check_clean();
}

#[test]
fn non_zero_exit_without_stderr_uploads_nothing() {
    let f = Fixture::new();
    let out = run(&["sh", "-c", "echo out; exit 2"], &f.env());
    assert_eq!(out.code, 2);
    assert_eq!(f.server.upload_attempts(), 0);
    f.check_clean();
}

#[test]
fn child_killed_by_sigkill_exits_137() {
    let f = Fixture::new();
    let out = run(&["sh", "-c", "echo dying >&2; kill -9 $$"], &f.env());
    assert_eq!(out.code, 137, "{}", out.stderr);
    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        (uploads[0].type_field.as_str(), uploads[0].text().as_str()),
        ("error", "dying\n")
    );
    f.check_clean();
}

fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The original entrypoint deadlocks past 64 KiB on stdin or on stderr; 10 MiB of each at once must flow.
#[test]
fn in_file_streams_to_stdin_while_stderr_is_read() {
    let f = Fixture::new();
    let input = pseudo_random(10 << 20, 0x9e37_79b9_7f4a_7c15);
    let noise = pseudo_random(10 << 20, 0x1234_5678_9abc_def1);
    f.server.serve("7", &input, false);
    let noise_path = f.marker("noise");
    std::fs::write(&noise_path, &noise).unwrap();

    // Exit 0: stdout (= stdin echoed by cat) is uploaded; 10 MiB go to stderr at the same time.
    let ok = start(
        &["sh", "-c", "cat \"$0\" >&2 & cat; wait", &noise_path],
        &f.env_with(&[("IN_FILE", "7")]),
    )
    .finish(Duration::from_secs(60));
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    // Same, failing: stderr is uploaded, and must be intact too.
    let failed = start(
        &[
            "sh",
            "-c",
            "cat \"$0\" >&2 & cat; wait; exit 5",
            &noise_path,
        ],
        &f.env_with(&[("IN_FILE", "7")]),
    )
    .finish(Duration::from_secs(60));
    assert_eq!(failed.code, 5, "{}", failed.stderr);

    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 2);
    assert_eq!(
        (uploads[0].filename.as_str(), uploads[0].len),
        ("stdout", 10 << 20)
    );
    assert_eq!(
        uploads[0].sha256,
        sha256_hex(&input),
        "stdin bytes changed on the way"
    );
    assert_eq!(
        (uploads[1].filename.as_str(), uploads[1].len),
        ("stderr", 10 << 20)
    );
    assert_eq!(
        uploads[1].sha256,
        sha256_hex(&noise),
        "stderr bytes changed on the way"
    );
    assert_eq!(f.server.downloads(), vec!["7", "7"]);
    f.check_clean();
}

/// 1 GiB of stdout is uploaded byte-exact while the entrypoint's peak RSS stays under 16 MiB.
#[test]
fn one_gib_of_stdout_uploads_exactly_in_bounded_memory() {
    const GIB: usize = 1 << 30;
    let f = Fixture::new();
    // A 997-byte line (998 with its newline): its period does not divide any buffer size.
    let line: String = (0..997)
        .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
        .collect();
    let expected = {
        let line = format!("{line}\n");
        std::thread::spawn(move || {
            let block = line.repeat(4096);
            let mut hasher = Sha256::new();
            let mut left = GIB;
            while left > 0 {
                let n = left.min(block.len());
                hasher.update(&block.as_bytes()[..n]);
                left -= n;
            }
            hex::encode(hasher.finalize())
        })
    };
    let script = format!("yes \"$0\" | head -c {GIB}");
    let out = start(&["sh", "-c", &script, &line], &f.env()).finish(Duration::from_secs(110));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].len, GIB as u64);
    assert_eq!(
        uploads[0].sha256,
        expected.join().unwrap(),
        "uploaded bytes differ"
    );

    let reported = out
        .reported_peak_kib()
        .expect("the entrypoint reports its peak RSS");
    let throughput = out
        .stderr
        .lines()
        .find(|l| l.contains("uploaded stdout"))
        .and_then(|l| l.rsplit('(').next())
        .unwrap_or("?")
        .trim_end_matches(')')
        .to_owned();
    println!(
        "1 GiB: peak RSS polled {} KiB, self-reported {reported} KiB; upload {throughput}; total {:.1} s",
        out.polled_peak_kib,
        out.elapsed.as_secs_f64()
    );
    assert!(out.polled_peak_kib > 0, "RSS was never sampled");
    assert!(
        out.polled_peak_kib < 16 * 1024,
        "peak RSS {} KiB",
        out.polled_peak_kib
    );
    assert!(reported < 16 * 1024, "peak RSS {reported} KiB");
    f.check_clean();
}

#[test]
fn upload_500_is_retried_then_fails_with_123() {
    let f = Fixture::new();
    f.server.set_upload_default(500);
    let started = Instant::now();
    let out = run(&["echo", "result"], &f.env());
    assert_eq!(out.code, UPLOAD, "{}", out.stderr);
    assert_eq!(
        f.server.upload_attempts(),
        4,
        "attempts counted by the server"
    );
    // 0.5 + 1 + 2 s of backoff.
    assert!(
        started.elapsed() >= Duration::from_millis(3400),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.stderr
            .contains("HTTP 500 Internal Server Error (after 4 attempts)"),
        "{}",
        out.stderr
    );
    f.check_clean();
}

#[test]
fn upload_recovers_after_a_transient_error() {
    let f = Fixture::new();
    f.server.plan_uploads(&[503]);
    let out = run(
        &["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' z"],
        &f.env(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.server.upload_attempts(), 2);
    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].sha256,
        sha256_hex(&[b'z'; 300_000]),
        "the retry resent the whole body"
    );
    f.check_clean();
}

#[test]
fn upload_4xx_is_not_retried() {
    let f = Fixture::new();
    f.server.set_upload_default(403);
    let out = run(&["echo", "result"], &f.env());
    assert_eq!(out.code, UPLOAD, "{}", out.stderr);
    assert_eq!(f.server.upload_attempts(), 1);
    f.check_clean();
}

#[test]
fn unreachable_upload_endpoint_fails_with_123() {
    let f = Fixture::new();
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/api/v1/file/");
    let out = run(&["echo", "result"], &f.env_with(&[("UPLOAD_URL", &url)]));
    assert_eq!(out.code, UPLOAD, "{}", out.stderr);
    assert!(out.stderr.contains("Connection refused"), "{}", out.stderr);
    f.check_clean();
}

#[test]
fn file_placeholders_are_downloaded_once_and_substituted() {
    let f = Fixture::new();
    let eleven = b"eleven\r\n\x00\xff binary".to_vec();
    let twenty_two = pseudo_random(100_000, 22);
    f.server.serve("11", &eleven, false);
    f.server.serve("22", &twenty_two, true);
    let out = run(
        &[
            "sh",
            "-c",
            "printf '%s\\n' \"$1\"; IFS=,; for p in $2; do cat \"$p\"; done",
            "sh",
            "a{file/11}|{file/11}c",
            "{file/11},{file/22}",
        ],
        &f.env(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut downloads = f.server.downloads();
    downloads.sort();
    assert_eq!(
        downloads,
        vec!["11", "22"],
        "each id is downloaded exactly once"
    );

    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 1);
    let body = &uploads[0].head;
    let newline = body.iter().position(|b| *b == b'\n').unwrap();
    let first = String::from_utf8(body[..newline].to_vec()).unwrap();
    // "a<path>|<path>c" with the same absolute path twice, inside the spool directory (the separator is one
    // that a temporary directory's random name cannot contain).
    let inner = first
        .strip_prefix('a')
        .and_then(|s| s.strip_suffix('c'))
        .unwrap();
    let (p1, p2) = inner.split_once('|').unwrap();
    assert_eq!(p1, p2);
    assert!(p1.starts_with(f.spool.path().to_str().unwrap()), "{p1}");
    assert!(!first.contains('{'), "{first}");
    let mut expected = eleven.clone();
    expected.extend_from_slice(&twenty_two);
    assert_eq!(
        &body[newline + 1..],
        expected.as_slice(),
        "file contents differ"
    );
    f.check_clean();
}

#[test]
fn download_403_fails_before_the_command_starts() {
    let f = Fixture::new();
    f.server.serve("32", b"fine", false);
    f.server.refuse("33", 403);
    let marker = f.marker("ran");
    let script = format!("touch {marker}; cat {{file/32}} {{file/33}}");
    let out = run(&["sh", "-c", &script], &f.env());
    assert_eq!(out.code, DOWNLOAD, "{}", out.stderr);
    assert!(!std::path::Path::new(&marker).exists(), "the command ran");
    assert_eq!(f.server.upload_attempts(), 0);
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("cannot download file 33"))
        .expect(&out.stderr);
    assert!(
        line.contains("HTTP 403 Forbidden (after 1 attempt)"),
        "{line}"
    );
    // The server echoed the token in its error body: it is redacted.
    assert!(line.contains("[redacted]"), "{line}");
    f.check_clean();
}

#[test]
fn missing_in_file_fails_with_122() {
    let f = Fixture::new();
    let marker = f.marker("ran");
    let out = run(&["touch", &marker], &f.env_with(&[("IN_FILE", "999")]));
    assert_eq!(out.code, DOWNLOAD, "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot download file 999: HTTP 404"),
        "{}",
        out.stderr
    );
    assert!(!std::path::Path::new(&marker).exists());
    f.check_clean();
}

#[test]
fn sigterm_is_forwarded_and_output_still_uploaded() {
    let f = Fixture::new();
    let marker = f.marker("trapping");
    let running = start(
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 0' TERM; echo before; touch \"$0\"; sleep 30 & wait",
            &marker,
        ],
        &f.env(),
    );
    wait_for(std::path::Path::new(&marker), Duration::from_secs(10));
    let signalled = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = running.finish(Duration::from_secs(20));
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "the child did not get the signal"
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("received SIGTERM, forwarded"),
        "{}",
        out.stderr
    );
    let uploads = f.server.accepted();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].text(), "before\ngot-term\n");
    f.check_clean();
}

#[test]
fn sigint_is_forwarded_to_a_child_without_a_trap() {
    let f = Fixture::new();
    let marker = f.marker("sleeping");
    let running = start(
        &["sh", "-c", "touch \"$0\"; exec sleep 30", &marker],
        &f.env(),
    );
    wait_for(std::path::Path::new(&marker), Duration::from_secs(10));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = running.finish(Duration::from_secs(20));
    assert_eq!(out.code, 130, "{}", out.stderr);
    assert_eq!(f.server.upload_attempts(), 0);
    f.check_clean();
}

/// The log lines of command `nth` ("2/3") of several: one, when it ends, naming it (`named`, the
/// quoted start of its argv) and its exit `code`; or, for a command that ran for over a second (a
/// loaded machine), its `running` line naming it, then its end.
fn assert_one_line_per_quick_command(stderr: &str, nth: &str, named: &str, code: i32) {
    let prefix = format!("kat-entrypoint: command {nth}: ");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&prefix)).collect();
    let ended = format!(" exited {code} after ");
    match lines.as_slice() {
        [one] => assert!(
            one.starts_with(&format!("{prefix}{named}")) && one.contains(&ended),
            "{stderr}"
        ),
        [running, end] => assert!(
            running.starts_with(&format!("{prefix}running {named}"))
                && end.starts_with(&format!("{prefix}exited {code} after ")),
            "{stderr}"
        ),
        _ => panic!("command {nth}: {} lines: {stderr}", lines.len()),
    }
}

#[test]
fn kat_commands_run_in_sequence_and_a_failure_does_not_stop_the_rest() {
    let f = Fixture::new();
    f.server.serve("44", b"third output from file 44\n", false);
    let commands =
        r#"[["sh","-c","echo one"],["sh","-c","echo two-err >&2; exit 3"],["cat","{file/44}"]]"#;
    let out = run(
        &["ignored-argv"],
        &f.env_with(&[("KAT_COMMANDS", commands)]),
    );
    assert_eq!(out.code, 3, "{}", out.stderr);
    assert!(
        out.stderr.contains("ignoring the 1 argv elements"),
        "{}",
        out.stderr
    );
    // With several commands, a quick command has one line, when it ends, naming it; the uploads
    // are counted in one line at the end.
    for (n, named, code) in [
        (1, r#""sh" "-c" "echo one""#, 0),
        (2, r#""sh" "-c" "echo two-err >&2; exit 3""#, 3),
        (3, r#""cat" ""#, 0),
    ] {
        assert_one_line_per_quick_command(&out.stderr, &format!("{n}/3"), named, code);
    }
    assert!(
        out.stderr.contains("kat-entrypoint: uploaded 3 outputs ("),
        "{}",
        out.stderr
    );
    // Uploads overlap the next commands but keep command order: the order is how a reader of the
    // task's files tells which output belongs to which target.
    let uploads: Vec<(String, String, String)> = f
        .server
        .accepted()
        .iter()
        .map(|u| (u.type_field.clone(), u.filename.clone(), u.text()))
        .collect();
    let expected: Vec<(String, String, String)> = vec![
        (PLUGIN.into(), "stdout".into(), "one\n".into()),
        ("error".into(), "stderr".into(), "two-err\n".into()),
        (
            PLUGIN.into(),
            "stdout".into(),
            "third output from file 44\n".into(),
        ),
    ];
    assert_eq!(uploads, expected);
    f.check_clean();
}

#[test]
fn kat_commands_log_a_slow_command_while_it_runs_and_an_empty_output_on_its_line() {
    let f = Fixture::new();
    let commands = r#"[["sh","-c","sleep 1.5; echo slow"],["true"],["echo","quick"]]"#;
    let out = run(&["ignored"], &f.env_with(&[("KAT_COMMANDS", commands)]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let at = |prefix: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting {prefix:?}: {}", out.stderr))
    };
    // The slow command's start is logged while it runs (before its end), and its end line does
    // not repeat the command.
    let running = at(
        r#"kat-entrypoint: command 1/3: running "sh" "-c" "sleep 1.5; echo slow" (started 1 s ago)"#,
    );
    let ended = at("kat-entrypoint: command 1/3: exited 0 after ");
    assert!(running < ended, "{}", out.stderr);
    // Quick commands: one line each, an empty output said on it.
    assert_one_line_per_quick_command(&out.stderr, "2/3", r#""true""#, 0);
    assert!(
        out.stderr.contains("; no stdout, nothing to upload"),
        "{}",
        out.stderr
    );
    assert_one_line_per_quick_command(&out.stderr, "3/3", r#""echo" "quick""#, 0);
    at("kat-entrypoint: uploaded 2 outputs (");
    assert!(!out.stderr.contains("uploaded stdout"), "{}", out.stderr);
    let got: Vec<String> = f.server.accepted().iter().map(|u| u.text()).collect();
    assert_eq!(got, vec!["slow\n".to_owned(), "quick\n".to_owned()]);
    f.check_clean();
}

/// What only one command, or pass-through mode, logs is unchanged by several commands' quieter
/// log: a `running` line before the command runs (in pass-through mode it says whose output
/// follows), and each upload's own line.
#[test]
fn one_kat_command_and_pass_through_commands_log_their_start_first() {
    let f = Fixture::new();
    let out = run(
        &["ignored"],
        &f.env_with(&[("KAT_COMMANDS", r#"[["echo","only"]]"#)]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(r#"kat-entrypoint: command 1/1: running "echo" "only""#)
            && out.stderr.contains("command 1/1: uploaded stdout (5 bytes"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("outputs ("), "{}", out.stderr);

    let env = vec![
        ("UPLOAD_URL".to_owned(), OsString::from("/dev/null")),
        (
            "KAT_COMMANDS".to_owned(),
            OsString::from(r#"[["sh","-c","echo err-a >&2"],["sh","-c","echo err-b >&2"]]"#),
        ),
        (
            "KAT_SPOOL_DIR".to_owned(),
            f.spool.path().as_os_str().to_owned(),
        ),
    ];
    let out = run(&["ignored"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stderr.lines().collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| *l == line || l.starts_with(line))
            .unwrap_or_else(|| panic!("no line {line:?}: {}", out.stderr))
    };
    assert!(at("kat-entrypoint: command 1/2: running ") < at("err-a"));
    assert!(at("err-a") < at("kat-entrypoint: command 2/2: running "));
    assert!(at("kat-entrypoint: command 2/2: running ") < at("err-b"));
    f.check_clean();
}

/// Among several commands, one that cannot start is named whole, as one that exceeds the output
/// limit is; the others still run. Uploads that all fail are not counted as uploaded.
#[test]
fn kat_commands_name_a_command_that_cannot_start_or_exceeds_the_limit() {
    let f = Fixture::new();
    let commands = r#"[["no-such-command-kat","arg-x"],["sh","-c","yes"],["echo","after"]]"#;
    let out = run(
        &["ignored"],
        &f.env_with(&[("KAT_COMMANDS", commands), ("KAT_OUTPUT_LIMIT", "1000")]),
    );
    assert_eq!(out.code, OUTPUT_LIMIT, "{}", out.stderr);
    assert!(
        out.stderr.contains(
            r#"kat-entrypoint: command 1/3: command not found: "no-such-command-kat" "arg-x": "#
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(
            r#"kat-entrypoint: command 2/3: "sh" "-c" "yes" stdout exceeded KAT_OUTPUT_LIMIT"#
        ),
        "{}",
        out.stderr
    );
    let got: Vec<String> = f.server.accepted().iter().map(|u| u.text()).collect();
    assert_eq!(got, vec!["after\n".to_owned()]);
    assert!(out.stderr.contains("uploaded 1 output ("), "{}", out.stderr);
    f.check_clean();
}

#[test]
fn kat_commands_upload_while_the_next_command_runs_and_wait_for_every_upload() {
    let f = Fixture::new();
    // Eight commands of 0.2 s each: their uploads overlap the later commands; every one arrives
    // before the entrypoint exits, and the spool directory is clean afterwards.
    let commands: Vec<Vec<String>> = (0..8)
        .map(|i| vec!["sh".into(), "-c".into(), format!("sleep 0.2; echo out-{i}")])
        .collect();
    let commands = serde_json::to_string(&commands).expect("json");
    let out = run(&["ignored"], &f.env_with(&[("KAT_COMMANDS", &commands)]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<String> = f.server.accepted().iter().map(|u| u.text()).collect();
    let want: Vec<String> = (0..8).map(|i| format!("out-{i}\n")).collect();
    assert_eq!(got, want);
    f.check_clean();
}

#[test]
fn kat_commands_uploads_arrive_in_command_order_even_when_a_large_one_is_followed_by_small_ones() {
    let f = Fixture::new();
    // A 3 MB output, then small ones: a small upload must not overtake the large one before it.
    let mut commands: Vec<Vec<String>> = Vec::new();
    for i in 0..4 {
        commands.push(vec![
            "sh".into(),
            "-c".into(),
            format!("head -c 3000000 /dev/zero | tr '\\0' '{i}'"),
        ]);
        for j in 0..3 {
            commands.push(vec!["echo".into(), format!("small-{i}-{j}")]);
        }
    }
    let commands_json = serde_json::to_string(&commands).expect("json");
    let out = run(
        &["ignored"],
        &f.env_with(&[("KAT_COMMANDS", &commands_json)]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<String> = f
        .server
        .accepted()
        .iter()
        .map(|u| {
            let text = u.text();
            if text.len() > 100 {
                format!("large-{}", &text[..1])
            } else {
                text.trim_end().to_owned()
            }
        })
        .collect();
    let want: Vec<String> = (0..4)
        .flat_map(|i| {
            std::iter::once(format!("large-{i}"))
                .chain((0..3).map(move |j| format!("small-{i}-{j}")))
        })
        .collect();
    assert_eq!(got, want);
    f.check_clean();
}

#[test]
fn kat_commands_with_failing_uploads_run_every_command_and_exit_123() {
    let f = Fixture::new();
    f.server.set_upload_default(400);
    let commands = r#"[["echo","a"],["echo","b"],["echo","c"]]"#;
    let out = run(&["ignored"], &f.env_with(&[("KAT_COMMANDS", commands)]));
    assert_eq!(out.code, UPLOAD, "{}", out.stderr);
    for n in 1..=3 {
        assert!(
            out.stderr
                .contains(&format!("command {n}/3: upload of stdout")),
            "{}",
            out.stderr
        );
    }
    // Nothing was uploaded, so nothing is counted as uploaded.
    assert!(!out.stderr.contains("outputs ("), "{}", out.stderr);
    f.check_clean();
}

#[test]
fn the_token_never_appears_in_logs() {
    let f = Fixture::new();
    f.server.refuse("5", 403);
    // (`support::Running::finish` asserts this for every run of every test; these runs put the token where a
    // careless log line would print it.)
    let scenarios: Vec<Scenario<'_>> = vec![
        (vec!["echo".into(), TOKEN.into()], vec![]),
        (
            vec![
                "sh".into(),
                "-c".into(),
                format!("echo {TOKEN} >&2; exit 1"),
            ],
            vec![],
        ),
        (vec!["cat".into(), "{file/5}".into()], vec![]),
        (vec![format!("/no/such/{TOKEN}")], vec![]),
        (
            vec!["echo".into()],
            vec![("UPLOAD_URL", format!("http://127.0.0.1:1/{TOKEN}"))],
        ),
        (
            vec!["echo".into()],
            vec![("OPENKAT_API", format!("ftp://{TOKEN}"))],
        ),
    ];
    for (args, extra) in scenarios {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let extra: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = run(&args, &f.env_with(&extra));
        assert!(!out.stderr.contains(TOKEN), "{}", out.stderr);
        assert!(
            !out.stderr.contains("5f1c0ffee"),
            "partial token: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains("[redacted]"),
            "{args:?}: {}",
            out.stderr
        );
    }
    // The server did receive the token: it was used, just never logged.
    assert!(
        f.server
            .accepted()
            .iter()
            .all(|u| u.auth.as_deref() == Some(&format!("Token {TOKEN}")))
    );
}

#[test]
fn output_limit_kills_the_command_and_uploads_nothing() {
    let f = Fixture::new();
    let limited = f.env_with(&[("KAT_OUTPUT_LIMIT", "1000")]);
    // Endless output on stdout, then on stderr.
    let out = run(&["yes"], &limited);
    assert_eq!(out.code, OUTPUT_LIMIT, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stdout exceeded KAT_OUTPUT_LIMIT (1000 bytes)"),
        "{}",
        out.stderr
    );
    let out = run(&["sh", "-c", "yes >&2"], &limited);
    assert_eq!(out.code, OUTPUT_LIMIT, "{}", out.stderr);
    assert!(out.stderr.contains("stderr exceeded"), "{}", out.stderr);
    assert_eq!(f.server.upload_attempts(), 0, "no partial upload");
    // Exactly the limit is fine.
    let out = run(&["head", "-c", "1000", "/dev/zero"], &limited);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.server.accepted()[0].len, 1000);
    f.check_clean();
}

#[test]
fn background_processes_holding_stdout_are_killed_after_the_command_exits() {
    let f = Fixture::new();
    let out =
        start(&["sh", "-c", "sleep 60 & echo done"], &f.env()).finish(Duration::from_secs(30));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.elapsed < Duration::from_secs(20), "{:?}", out.elapsed);
    assert!(
        out.stderr.contains("killing process group"),
        "{}",
        out.stderr
    );
    assert_eq!(f.server.accepted()[0].text(), "done\n");
    f.check_clean();
}

#[test]
fn configuration_errors_exit_121_before_anything_runs() {
    let f = Fixture::new();
    let marker = f.marker("ran");
    let touch = ["touch", marker.as_str()];
    let cases: Vec<ConfigCase<'_>> = vec![
        (vec![], vec![], "no command to run"),
        (
            touch.to_vec(),
            vec![("OPENKAT_API", "localhost:8000/api/v1")],
            "OPENKAT_API must start with http://",
        ),
        (
            touch.to_vec(),
            vec![("OPENKAT_API", "https://kat/api/v1")],
            "https is not supported",
        ),
        (
            touch.to_vec(),
            vec![("UPLOAD_URL", "http://kat:99999/")],
            "UPLOAD_URL has an invalid port",
        ),
        (
            touch.to_vec(),
            vec![("KAT_COMMANDS", "[[]]")],
            "KAT_COMMANDS command 1 is an empty array",
        ),
        (
            touch.to_vec(),
            vec![("KAT_COMMANDS", "[\"touch\"]")],
            "KAT_COMMANDS is not a JSON array",
        ),
        (
            touch.to_vec(),
            vec![("PLUGIN_ID", "")],
            "PLUGIN_ID is not set",
        ),
        (
            touch.to_vec(),
            vec![("OPENKAT_TOKEN", "")],
            "OPENKAT_TOKEN is not set",
        ),
        (
            touch.to_vec(),
            vec![("IN_FILE", "abc")],
            "IN_FILE must be a file id",
        ),
        (
            touch.to_vec(),
            vec![("KAT_OUTPUT_LIMIT", "lots")],
            "KAT_OUTPUT_LIMIT must be a number",
        ),
    ];
    for (args, extra, message) in cases {
        let out = run(&args, &f.env_with(&extra));
        assert_eq!(out.code, CONFIG, "{extra:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(message),
            "{extra:?}: expected {message:?} in {}",
            out.stderr
        );
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "one clear line: {}",
            out.stderr
        );
    }
    assert!(!std::path::Path::new(&marker).exists());
    assert!(f.server.requests().is_empty());
    f.check_clean();
}

#[test]
fn unrunnable_commands_exit_126_and_127() {
    let f = Fixture::new();
    let out = run(&["no-such-command-kat"], &f.env());
    assert_eq!(out.code, 127, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("command not found: \"no-such-command-kat\""),
        "{}",
        out.stderr
    );
    let script = f.marker("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let out = run(&[&script], &f.env());
    assert_eq!(out.code, 126, "{}", out.stderr);
    assert!(
        out.stderr.contains("command not executable"),
        "{}",
        out.stderr
    );
    assert_eq!(f.server.upload_attempts(), 0);
    f.check_clean();
}

#[test]
fn pass_through_mode_writes_to_our_streams_and_keeps_the_code() {
    let f = Fixture::new();
    let env = vec![
        ("UPLOAD_URL".to_owned(), OsString::from("/dev/null")),
        (
            "KAT_SPOOL_DIR".to_owned(),
            f.spool.path().as_os_str().to_owned(),
        ),
    ];
    let out = run(
        &["sh", "-c", "echo passed-out; echo passed-err >&2; exit 2"],
        &env,
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stdout, "passed-out\n");
    assert!(
        out.stderr.lines().any(|l| l == "passed-err"),
        "{}",
        out.stderr
    );
    assert!(f.server.requests().is_empty());
    f.check_clean();
}

#[test]
fn a_missing_spool_dir_is_created_and_an_unusable_one_exits_120() {
    let f = Fixture::new();
    let nested = f.scratch.path().join("no/tmp/yet");
    let nested_str = nested.to_string_lossy().into_owned();
    let out = run(
        &["echo", "spooled"],
        &f.env_with(&[("KAT_SPOOL_DIR", &nested_str)]),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(f.server.accepted()[0].text(), "spooled\n");
    assert_eq!(leftovers(&nested), Vec::<std::path::PathBuf>::new());

    let marker = f.marker("ran");
    let out = run(
        &["touch", &marker],
        &f.env_with(&[("KAT_SPOOL_DIR", "/dev/null/spool")]),
    );
    assert_eq!(out.code, 120, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot create the spool directory /dev/null/spool"),
        "{}",
        out.stderr
    );
    assert!(!std::path::Path::new(&marker).exists());
    // Pass-through without inputs needs no spool directory at all.
    let env = vec![
        ("UPLOAD_URL".to_owned(), OsString::from("/dev/null")),
        (
            "KAT_SPOOL_DIR".to_owned(),
            OsString::from("/dev/null/spool"),
        ),
    ];
    let out = run(&["true"], &env);
    assert_eq!(out.code, 0, "{}", out.stderr);
    f.check_clean();
}

/// The command must start with no blocked signals: a shell that does not reset its mask (busybox ash) could
/// otherwise never receive the forwarded SIGTERM.
#[test]
fn the_command_starts_with_an_empty_signal_mask() {
    let f = Fixture::new();
    let out = run(
        &["grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
        &f.env(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = f.server.accepted()[0].text();
    let field = |name: &str| {
        let line = text.lines().find(|l| l.starts_with(name)).expect(&text);
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(
        field("SigBlk:"),
        0,
        "blocked signals in the command: {text}"
    );
    for sig in [2, 15] {
        assert_eq!(
            field("SigIgn:") & (1 << (sig - 1)),
            0,
            "signal {sig} ignored in the command: {text}"
        );
    }
    f.check_clean();
}

/// Commands too many for one environment string come as a stored file (`KAT_COMMANDS_FILE`): it is
/// downloaded with the token first, its commands run like `KAT_COMMANDS` (their `{file/<id>}` inputs
/// downloaded too), and a file that is not a list of commands exits 121 before anything runs.
#[test]
fn kat_commands_file_is_downloaded_and_run_like_kat_commands() {
    let f = Fixture::new();
    f.server.serve("45", b"from file 45\n", false);
    // 5,000 commands: about 150 KiB of JSON, more than one environment string may hold.
    let mut commands: Vec<Vec<String>> = (0..5000)
        .map(|i| vec!["true".to_string(), format!("target-{i:05}.example")])
        .collect();
    commands.push(vec!["cat".into(), "{file/45}".into()]);
    let json = serde_json::to_string(&commands).unwrap();
    assert!(json.len() > 128 * 1024);
    f.server.serve("9", json.as_bytes(), false);
    let out = run(&[], &f.env_with(&[("KAT_COMMANDS_FILE", "9")]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("5001 commands"), "{}", out.stderr);
    let uploads: Vec<String> = f.server.accepted().iter().map(|u| u.text()).collect();
    assert_eq!(uploads, ["from file 45\n"]);
    assert_eq!(f.server.downloads(), vec!["9", "45"]);
    f.check_clean();

    let g = Fixture::new();
    g.server.serve("9", br#"[["echo","a"],[]]"#, false);
    let marker = g.marker("ran");
    let out = run(
        &["touch", &marker],
        &g.env_with(&[("KAT_COMMANDS_FILE", "9")]),
    );
    assert_eq!(out.code, CONFIG, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("KAT_COMMANDS_FILE command 2 is an empty array"),
        "{}",
        out.stderr
    );
    assert!(!std::path::Path::new(&marker).exists(), "nothing ran");
    assert!(g.server.accepted().is_empty());
    let out = run(&["true"], &g.env_with(&[("KAT_COMMANDS_FILE", "404")]));
    assert_eq!(out.code, DOWNLOAD, "{}", out.stderr);
}
