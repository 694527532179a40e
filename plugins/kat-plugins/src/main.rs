//! `kat-plugins`: the multi-call binary. `kat-plugins <subcommand> ...`, or called by a subcommand's
//! name (a link named `dns` runs `dns`).

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use kat_plugins::error::EXIT_USAGE;
use kat_plugins::{Error, dns, http_headers, nmap, portscan, tls};

const USAGE: &str = "\
kat-plugins: kat-rs's first-party plugins (talk to the API at $OPENKAT_API with $OPENKAT_TOKEN)

usage:
  kat-plugins dns <hostname> [--nameserver IP:PORT] [--timeout SECS] [--no-srv] [--no-cleanup]
  kat-plugins portscan <ip> [--ports 1-1024,8080|top] [--timeout SECS] [--banner-timeout SECS]
                            [--concurrency N] [--no-banner]
  kat-plugins parse-nmap <file-id> | --file PATH [--no-cleanup]
  kat-plugins tls <hostname>[:port] [--port N] [--timeout SECS] [--ca-file PEM] [--no-legacy] [--no-cleanup]
  kat-plugins http-headers <hostname>[:port] [--https-port N] [--http-port N] [--timeout SECS] [--no-cleanup]
  kat-plugins version

Each prints what it did on stdout (JSON; portscan prints nmap XML) and exits 0; on failure it says
why on stderr and exits 1 (2 for a usage error). The environment: OPENKAT_API, OPENKAT_TOKEN
(never printed), KAT_DNS_NAMESERVER (dns).
";

const SUBCOMMANDS: [&str; 5] = ["dns", "portscan", "parse-nmap", "tls", "http-headers"];

fn emit(text: &str) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::new(format!("cannot write the output: {e}")))
}

fn json_out(v: serde_json::Value) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(&v).map_err(|e| Error::new(e.to_string()))?;
    emit(&format!("{text}\n"))
}

fn dispatch(cmd: &str, rest: &[String]) -> Result<(), Error> {
    match cmd {
        "dns" => json_out(dns::run(rest)?),
        "portscan" => emit(&portscan::run(rest)?),
        "parse-nmap" => json_out(nmap::run(rest)?),
        "tls" => json_out(tls::run(rest)?),
        "http-headers" => json_out(http_headers::run(rest)?),
        "version" | "--version" | "-V" => emit(&format!("kat-plugins {}\n", kat_plugins::VERSION)),
        "help" | "--help" | "-h" => emit(USAGE),
        other => Err(Error::usage(format!(
            "unknown subcommand {other:?}; known: {}",
            SUBCOMMANDS.join(", ")
        ))),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let called_as = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("kat-plugins")
        .to_string();
    let (cmd, rest): (String, &[String]) = if SUBCOMMANDS.contains(&called_as.as_str()) {
        (called_as.clone(), argv.get(1..).unwrap_or_default())
    } else {
        match argv.get(1) {
            Some(c) => (c.clone(), argv.get(2..).unwrap_or_default()),
            None => {
                eprint!("{USAGE}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        let _ = emit(USAGE);
        return ExitCode::SUCCESS;
    }
    match dispatch(&cmd, rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kat-plugins {cmd}: error: {e}");
            if e.exit_code() == EXIT_USAGE {
                eprintln!("run `kat-plugins help` for usage");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
