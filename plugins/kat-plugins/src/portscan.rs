//! `portscan <ip>`: a TCP connect scan of one address, written as nmap XML (`-oX`) on stdout so that
//! `parse-nmap` (or anything that reads nmap output) takes it exactly like real nmap's.
//!
//! Connects only to the address it is given, with a bounded number of connections at a time and a
//! timeout on each; reads the greeting of open ports (and sends `HEAD /` to the usual HTTP ports) to
//! name the service and software.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::cli::Args;
use crate::names::canonical_ip;
use crate::{Error, Result};

/// The default port list: about a hundred common TCP ports (nmap's most frequent ones plus every port
/// the port rules care about).
pub const TOP_PORTS: [u16; 110] = [
    7, 9, 13, 21, 22, 23, 25, 26, 37, 53, 79, 80, 81, 88, 106, 110, 111, 113, 119, 135, 139, 143,
    144, 179, 199, 389, 427, 443, 444, 445, 465, 513, 514, 515, 543, 544, 548, 554, 587, 631, 646,
    873, 990, 993, 995, 1025, 1026, 1027, 1028, 1029, 1110, 1433, 1434, 1521, 1720, 1723, 1755,
    1900, 2000, 2001, 2049, 2121, 2717, 3000, 3050, 3128, 3306, 3389, 3986, 4899, 5000, 5009, 5051,
    5060, 5101, 5190, 5357, 5432, 5631, 5666, 5800, 5900, 5984, 6000, 6001, 6379, 6646, 7070, 8000,
    8008, 8009, 8080, 8081, 8443, 8888, 9042, 9100, 9200, 9999, 10000, 11211, 27017, 32768, 49152,
    49153, 49154, 49155, 49156, 49157, 50000,
];

/// Ports that get a `HEAD / HTTP/1.0` when they say nothing first.
const HTTP_PORTS: [u16; 9] = [80, 81, 3000, 5000, 8000, 8008, 8080, 8081, 8888];

/// The service usually found on a port (nmap-services names where they exist).
pub fn table_service(port: u16) -> Option<&'static str> {
    Some(match port {
        21 => "ftp",
        22 => "ssh",
        23 => "telnet",
        25 => "smtp",
        53 => "domain",
        79 => "finger",
        80 | 81 => "http",
        88 => "kerberos-sec",
        110 => "pop3",
        111 => "rpcbind",
        119 => "nntp",
        135 => "msrpc",
        139 => "netbios-ssn",
        143 => "imap",
        179 => "bgp",
        389 => "ldap",
        443 => "https",
        445 => "microsoft-ds",
        465 => "smtps",
        513 => "login",
        514 => "shell",
        515 => "printer",
        548 => "afp",
        554 => "rtsp",
        587 => "submission",
        631 => "ipp",
        873 => "rsync",
        990 => "ftps",
        993 => "imaps",
        995 => "pop3s",
        1433 => "ms-sql-s",
        1434 => "ms-sql-m",
        1521 => "oracle",
        1723 => "pptp",
        2049 => "nfs",
        3050 => "gds_db",
        3128 => "squid-http",
        3306 => "mysql",
        3389 => "ms-wbt-server",
        5060 => "sip",
        5432 => "postgresql",
        5900 => "vnc",
        5984 => "couchdb",
        6000 => "X11",
        6379 => "redis",
        8000 => "http-alt",
        8008 => "http",
        8080 => "http-proxy",
        8443 => "https-alt",
        9042 => "cassandra",
        9100 => "jetdirect",
        9200 => "elasticsearch",
        10000 => "snet-sensor-mgmt",
        11211 => "memcache",
        27017 => "mongod",
        _ => return None,
    })
}

/// Parse a port list: `top` (the default list), numbers and inclusive ranges (`1-1024,8080,top`).
/// The result is sorted and without duplicates.
///
/// # Errors
/// A usage error naming the bad element.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>> {
    let mut set = std::collections::BTreeSet::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.eq_ignore_ascii_case("top") {
            set.extend(TOP_PORTS);
            continue;
        }
        let ranges = crate::nmap::parse_port_ranges(part)
            .map_err(|e| Error::usage(format!("--ports: {e}")))?;
        for (lo, hi) in ranges {
            set.extend(lo..=hi);
        }
    }
    if set.is_empty() {
        return Err(Error::usage("--ports names no port"));
    }
    Ok(set.into_iter().collect())
}

/// A sorted port list as nmap writes it (`1-1024,3306,5432`).
pub fn compress_ranges(ports: &[u16]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let lo = ports[i];
        let mut hi = lo;
        while i + 1 < ports.len() && ports[i + 1] == hi.saturating_add(1) && ports[i + 1] > hi {
            hi = ports[i + 1];
            i += 1;
        }
        parts.push(if lo == hi {
            lo.to_string()
        } else {
            format!("{lo}-{hi}")
        });
        i += 1;
    }
    parts.join(",")
}

/// What the scan found on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// The connection was accepted.
    Open,
    /// The connection was refused.
    Closed,
    /// No answer in time, or the network said unreachable.
    Filtered,
}

/// A service guess for an open port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Guess {
    /// Service name (`ssh`).
    pub name: String,
    /// Product (`OpenSSH`).
    pub product: Option<String>,
    /// Version (`9.2p1`).
    pub version: Option<String>,
    /// Extra information (`protocol 2.0`).
    pub extrainfo: Option<String>,
    /// `probed` (from the greeting) or `table` (from the port number).
    pub method: &'static str,
    /// nmap's confidence: 10 probed, 3 table.
    pub conf: u8,
}

/// One scanned port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortResult {
    /// The port.
    pub port: u16,
    /// What was found.
    pub state: PortState,
    /// The service guess (open ports only).
    pub service: Option<Guess>,
}

fn text_of(s: &str) -> Option<String> {
    let t: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect::<String>()
        .trim()
        .to_string();
    (!t.is_empty()).then_some(t)
}

fn split_name_version(s: &str, sep: char) -> (String, Option<String>) {
    match s.split_once(sep) {
        Some((n, v)) if !v.is_empty() => (n.to_string(), text_of(v)),
        _ => (s.to_string(), None),
    }
}

/// The first whitespace-separated word after `marker` in `line` (case-insensitive), e.g. the version
/// after `vsFTPd`.
fn word_after(line: &str, marker: &str) -> Option<String> {
    let lower = line.to_ascii_lowercase();
    let at = lower.find(&marker.to_ascii_lowercase())? + marker.len();
    line.get(at..)?
        .split(|c: char| c.is_whitespace() || c == ')' || c == '(' || c == ']')
        .find(|w| !w.is_empty())
        .and_then(text_of)
}

fn probed(name: &str, product: Option<&str>, version: Option<String>) -> Guess {
    Guess {
        name: name.to_string(),
        product: product.map(str::to_string),
        version,
        extrainfo: None,
        method: "probed",
        conf: 10,
    }
}

fn http_guess(text: &str) -> Guess {
    let server = text
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("server")
                .then(|| v.trim().to_string())
        });
    let mut g = probed("http", None, None);
    if let Some(server) = server.as_deref().and_then(text_of) {
        let first = server.split_whitespace().next().unwrap_or(&server);
        let (name, version) = split_name_version(first, '/');
        let product = match name.to_ascii_lowercase().as_str() {
            "apache" => "Apache httpd".to_string(),
            "microsoft-iis" => "Microsoft IIS httpd".to_string(),
            "nginx" => "nginx".to_string(),
            "lighttpd" => "lighttpd".to_string(),
            _ => name,
        };
        g.product = Some(product);
        g.version = version;
        let rest = server[first.len()..].trim();
        if !rest.is_empty() {
            g.extrainfo = text_of(rest.trim_matches(|c| c == '(' || c == ')'));
        }
    }
    g
}

/// Name the service from what it sent (its greeting, or its answer to `HEAD /`), nmap style.
pub fn guess_from_banner(port: u16, banner: &[u8]) -> Option<Guess> {
    if banner.is_empty() {
        return None;
    }
    // Telnet option negotiation (IAC WILL/WONT/DO/DONT).
    if banner.len() >= 2 && banner[0] == 0xff && (0xfb..=0xfe).contains(&banner[1]) {
        return Some(probed("telnet", None, None));
    }
    // MySQL/MariaDB initial handshake: 3-byte length, sequence 0, protocol 10, NUL-terminated version;
    // or an error packet (0xff) when this client may not connect.
    if banner.len() > 5 && banner[3] == 0 && (banner[4] == 0x0a || banner[4] == 0xff) {
        let len =
            usize::from(banner[0]) | usize::from(banner[1]) << 8 | usize::from(banner[2]) << 16;
        if len + 4 <= banner.len() + 64 && len > 1 {
            if banner[4] == 0xff {
                return Some(probed("mysql", Some("MySQL"), None));
            }
            let body = &banner[5..];
            let end = body.iter().position(|b| *b == 0).unwrap_or(body.len());
            let v = String::from_utf8_lossy(&body[..end]).to_string();
            if let Some(rest) = v.strip_prefix("5.5.5-")
                && let Some((mariadb, _)) = rest.split_once("-MariaDB")
            {
                return Some(probed("mysql", Some("MariaDB"), text_of(mariadb)));
            }
            return Some(probed("mysql", Some("MySQL"), text_of(&v)));
        }
    }
    let text = String::from_utf8_lossy(banner);
    let line = text.lines().next().unwrap_or("").trim();
    if let Some(rest) = line.strip_prefix("SSH-") {
        // SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3
        let mut it = rest.splitn(2, '-');
        let proto = it.next().unwrap_or("");
        let software = it.next().unwrap_or("");
        let (sw, comment) = match software.split_once(' ') {
            Some((s, c)) => (s, text_of(c)),
            None => (software, None),
        };
        let (name, version) = split_name_version(sw, '_');
        let product = match name.as_str() {
            "OpenSSH" => "OpenSSH".to_string(),
            "dropbear" => "Dropbear sshd".to_string(),
            other => other.to_string(),
        };
        let mut g = probed("ssh", text_of(&product).as_deref(), version);
        let proto_info = if proto == "1.99" { "2.0" } else { proto };
        g.extrainfo = Some(match comment {
            Some(c) => format!("{c}; protocol {proto_info}"),
            None => format!("protocol {proto_info}"),
        });
        return Some(g);
    }
    if let Some(v) = line.strip_prefix("RFB ") {
        let mut g = probed("vnc", Some("VNC"), None);
        let proto = v
            .trim()
            .trim_start_matches('0')
            .replace(".00", ".")
            .replace(".0", ".");
        g.extrainfo = text_of(&format!("protocol {proto}"));
        return Some(g);
    }
    if line.starts_with("HTTP/1.") || line.starts_with("HTTP/2") {
        return Some(http_guess(&text));
    }
    if line.starts_with("+OK") {
        let dovecot = line.to_ascii_lowercase().contains("dovecot");
        return Some(probed("pop3", dovecot.then_some("Dovecot pop3d"), None));
    }
    if line.starts_with("* OK") {
        let dovecot = line.to_ascii_lowercase().contains("dovecot");
        return Some(probed("imap", dovecot.then_some("Dovecot imapd"), None));
    }
    if line.starts_with("220") {
        let lower = line.to_ascii_lowercase();
        if lower.contains("ftp") || port == 21 {
            if lower.contains("vsftpd") {
                return Some(probed("ftp", Some("vsftpd"), word_after(line, "vsftpd")));
            }
            if lower.contains("proftpd") {
                return Some(probed("ftp", Some("ProFTPD"), word_after(line, "proftpd")));
            }
            if lower.contains("pure-ftpd") {
                return Some(probed("ftp", Some("Pure-FTPd"), None));
            }
            return Some(probed("ftp", None, None));
        }
        if lower.contains("smtp") || matches!(port, 25 | 465 | 587) {
            if lower.contains("postfix") {
                return Some(probed("smtp", Some("Postfix smtpd"), None));
            }
            if lower.contains("exim") {
                return Some(probed("smtp", Some("Exim smtpd"), word_after(line, "exim")));
            }
            return Some(probed("smtp", None, None));
        }
    }
    None
}

/// The guess for an open port: from its banner when recognisable, else from the port number.
pub fn guess(port: u16, banner: &[u8]) -> Option<Guess> {
    guess_from_banner(port, banner).or_else(|| {
        table_service(port).map(|name| Guess {
            name: name.to_string(),
            method: "table",
            conf: 3,
            ..Guess::default()
        })
    })
}

/// Escape text for an XML attribute (and drop characters XML 1.0 cannot carry at all).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD hh:mm:ss UTC` for a Unix time.
pub fn utc_string(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mut y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    if m <= 2 {
        y += 1;
    }
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What the XML says about the run besides the ports.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// The command line, for `args`.
    pub args: String,
    /// Unix start time.
    pub start: i64,
    /// Unix end time.
    pub end: i64,
    /// Seconds taken.
    pub elapsed: f64,
}

/// Write the scan as nmap XML: open ports listed, closed and filtered ones counted in `<extraports>`,
/// the scanned list in `<scaninfo services=...>`.
pub fn to_xml(ip: IpAddr, scanned: &[u16], results: &[PortResult], info: &RunInfo) -> String {
    use std::fmt::Write as _;
    let count = |s: PortState| results.iter().filter(|r| r.state == s).count();
    let (open, closed, filtered) = (
        count(PortState::Open),
        count(PortState::Closed),
        count(PortState::Filtered),
    );
    let up = open + closed > 0;
    let mut x = String::new();
    let _ = writeln!(x, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>");
    let _ = writeln!(x, "<!DOCTYPE nmaprun>");
    let _ = writeln!(
        x,
        "<!-- kat-plugins portscan {} (TCP connect scan) -->",
        crate::VERSION
    );
    let _ = writeln!(
        x,
        "<nmaprun scanner=\"kat-portscan\" args=\"{}\" start=\"{}\" startstr=\"{}\" version=\"{}\" xmloutputversion=\"1.05\">",
        xml_escape(&info.args),
        info.start,
        utc_string(info.start),
        crate::VERSION
    );
    let _ = writeln!(
        x,
        "<scaninfo type=\"connect\" protocol=\"tcp\" numservices=\"{}\" services=\"{}\"/>",
        scanned.len(),
        compress_ranges(scanned)
    );
    let (state, reason) = if up {
        ("up", if open > 0 { "syn-ack" } else { "conn-refused" })
    } else {
        ("down", "no-response")
    };
    let _ = writeln!(
        x,
        "<host starttime=\"{}\" endtime=\"{}\"><status state=\"{state}\" reason=\"{reason}\" reason_ttl=\"0\"/>",
        info.start, info.end
    );
    let addrtype = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
    let _ = writeln!(x, "<address addr=\"{ip}\" addrtype=\"{addrtype}\"/>");
    let _ = writeln!(x, "<hostnames/>");
    x.push_str("<ports>");
    if closed > 0 {
        let _ = writeln!(x, "<extraports state=\"closed\" count=\"{closed}\"/>");
    }
    if filtered > 0 {
        let _ = writeln!(x, "<extraports state=\"filtered\" count=\"{filtered}\"/>");
    }
    for r in results.iter().filter(|r| r.state == PortState::Open) {
        let _ = write!(
            x,
            "<port protocol=\"tcp\" portid=\"{}\"><state state=\"open\" reason=\"syn-ack\" reason_ttl=\"0\"/>",
            r.port
        );
        if let Some(g) = &r.service {
            let _ = write!(x, "<service name=\"{}\"", xml_escape(&g.name));
            for (k, v) in [
                ("product", &g.product),
                ("version", &g.version),
                ("extrainfo", &g.extrainfo),
            ] {
                if let Some(v) = v {
                    let _ = write!(x, " {k}=\"{}\"", xml_escape(v));
                }
            }
            let _ = write!(x, " method=\"{}\" conf=\"{}\"/>", g.method, g.conf);
        }
        x.push_str("</port>\n");
    }
    x.push_str("</ports>\n</host>\n");
    let _ = writeln!(
        x,
        "<runstats><finished time=\"{}\" timestr=\"{}\" elapsed=\"{:.2}\" summary=\"kat-plugins portscan done; 1 IP address ({} host up) scanned in {:.2} seconds\" exit=\"success\"/><hosts up=\"{}\" down=\"{}\" total=\"1\"/>",
        info.end,
        utc_string(info.end),
        info.elapsed,
        usize::from(up),
        info.elapsed,
        usize::from(up),
        usize::from(!up)
    );
    x.push_str("</runstats>\n</nmaprun>\n");
    x
}

/// Scan settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Per-connection timeout.
    pub connect_timeout: Duration,
    /// How long to wait for a greeting (and again for an answer to `HEAD /`); zero: no banners.
    pub banner_timeout: Duration,
    /// Connections at a time.
    pub concurrency: usize,
}

async fn grab_banner(stream: &mut TcpStream, port: u16, wait: Duration) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    if let Ok(Ok(n)) = tokio::time::timeout(wait, stream.read(&mut buf)).await {
        if n > 0 {
            // A greeting may come in pieces; take what follows quickly.
            let mut got = n;
            while got < buf.len() {
                match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf[got..]))
                    .await
                {
                    Ok(Ok(m)) if m > 0 => got += m,
                    _ => break,
                }
            }
            buf.truncate(got);
            return buf;
        }
        return Vec::new();
    }
    if !HTTP_PORTS.contains(&port) {
        return Vec::new();
    }
    if stream
        .write_all(b"HEAD / HTTP/1.0\r\nUser-Agent: kat-plugins-portscan\r\n\r\n")
        .await
        .is_err()
    {
        return Vec::new();
    }
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while got < buf.len() {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf[got..])).await {
            Ok(Ok(m)) if m > 0 => {
                got += m;
                if buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            _ => break,
        }
    }
    buf.truncate(got);
    buf
}

async fn scan_port(ip: IpAddr, port: u16, s: Arc<Settings>) -> PortResult {
    let addr = SocketAddr::new(ip, port);
    let state_and_stream =
        match tokio::time::timeout(s.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => (PortState::Open, Some(stream)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                (PortState::Closed, None)
            }
            Ok(Err(_)) | Err(_) => (PortState::Filtered, None),
        };
    match state_and_stream {
        (PortState::Open, Some(mut stream)) => {
            let banner = if s.banner_timeout.is_zero() {
                Vec::new()
            } else {
                grab_banner(&mut stream, port, s.banner_timeout).await
            };
            let _ = stream.shutdown().await;
            PortResult {
                port,
                state: PortState::Open,
                service: guess(port, &banner),
            }
        }
        (state, _) => PortResult {
            port,
            state,
            service: None,
        },
    }
}

/// Scan `ports` of `ip`, at most `concurrency` connections at a time. Results are in port order.
///
/// # Errors
/// When the runtime cannot be built.
pub fn scan(ip: IpAddr, ports: &[u16], settings: Settings) -> Result<Vec<PortResult>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("cannot start the scanner: {e}")))?;
    let settings = Arc::new(settings);
    let sem = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    rt.block_on(async move {
        let mut set = tokio::task::JoinSet::new();
        for &port in ports {
            let sem = sem.clone();
            let s = settings.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                scan_port(ip, port, s).await
            });
        }
        let mut results = BTreeMap::new();
        while let Some(r) = set.join_next().await {
            let r = r.map_err(|e| Error::new(format!("a scan task failed: {e}")))?;
            results.insert(r.port, r);
        }
        Ok(results.into_values().collect())
    })
}

/// `portscan <ip> [--ports SPEC] [--timeout SECS] [--banner-timeout SECS] [--concurrency N]
/// [--no-banner]`: the XML to print.
///
/// # Errors
/// Bad arguments.
pub fn run(args: &[String]) -> Result<String> {
    let a = Args::parse(
        args,
        &["ports", "timeout", "banner-timeout", "concurrency"],
        &["no-banner"],
    )?;
    let target = a.one_positional("IP address")?;
    let ip = canonical_ip(target).ok_or_else(|| {
        Error::usage(format!(
            "portscan takes an IP address (it connects to nothing else), got {target:?}"
        ))
    })?;
    let ports = parse_ports(a.option("ports").unwrap_or("top"))?;
    let settings = Settings {
        connect_timeout: a.seconds("timeout", Duration::from_millis(1500), 60.0)?,
        banner_timeout: if a.flag("no-banner") {
            Duration::ZERO
        } else {
            a.seconds("banner-timeout", Duration::from_millis(1500), 30.0)?
        },
        concurrency: a.number("concurrency", 100, 1, 1000)? as usize,
    };
    let now = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    let start = now();
    let t0 = Instant::now();
    let results = scan(ip, &ports, settings)?;
    let info = RunInfo {
        args: format!("kat-plugins portscan {}", args.join(" ")),
        start,
        end: now(),
        elapsed: t0.elapsed().as_secs_f64(),
    };
    let open: Vec<String> = results
        .iter()
        .filter(|r| r.state == PortState::Open)
        .map(|r| r.port.to_string())
        .collect();
    eprintln!(
        "kat-plugins portscan: {ip}: {} of {} ports open{}{} in {:.2} s",
        open.len(),
        ports.len(),
        if open.is_empty() { "" } else { ": " },
        open.join(","),
        info.elapsed
    );
    Ok(to_xml(ip, &ports, &results, &info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_specs() {
        assert_eq!(parse_ports("22").unwrap(), vec![22]);
        assert_eq!(parse_ports("3-5,4,1").unwrap(), vec![1, 3, 4, 5]);
        assert_eq!(parse_ports("1-1024").unwrap().len(), 1024);
        let top = parse_ports("top").unwrap();
        for p in [
            21, 22, 23, 25, 53, 80, 443, 1433, 1434, 3050, 3306, 3389, 5432, 5900, 6379, 8000,
            8080, 8443, 9200, 27017,
        ] {
            assert!(top.contains(&p), "{p}");
        }
        assert!(parse_ports("0").is_err());
        assert!(parse_ports("65536").is_err());
        assert!(parse_ports("x").is_err());
        assert!(parse_ports(",").is_err());
        assert_eq!(parse_ports("65535").unwrap(), vec![65535]);
    }

    #[test]
    fn ranges_compress() {
        assert_eq!(
            compress_ranges(&[1, 2, 3, 5, 7, 8, 65535]),
            "1-3,5,7-8,65535"
        );
        assert_eq!(compress_ranges(&[]), "");
        assert_eq!(compress_ranges(&[65534, 65535]), "65534-65535");
    }

    #[test]
    fn banners() {
        let g = guess(22, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n").unwrap();
        assert_eq!(g.name, "ssh");
        assert_eq!(g.product.as_deref(), Some("OpenSSH"));
        assert_eq!(g.version.as_deref(), Some("9.2p1"));
        assert_eq!(
            g.extrainfo.as_deref(),
            Some("Debian-2+deb12u3; protocol 2.0")
        );
        assert_eq!(g.method, "probed");
        let g = guess(2222, b"SSH-2.0-dropbear_2022.83\r\n").unwrap();
        assert_eq!(g.product.as_deref(), Some("Dropbear sshd"));
        assert_eq!(g.version.as_deref(), Some("2022.83"));
        let g = guess(21, b"220 (vsFTPd 3.0.3)\r\n").unwrap();
        assert_eq!(
            (g.name.as_str(), g.product.as_deref(), g.version.as_deref()),
            ("ftp", Some("vsftpd"), Some("3.0.3"))
        );
        let g = guess(
            21,
            b"220 ProFTPD 1.3.8 Server (Debian) [::ffff:127.0.0.1]\r\n",
        )
        .unwrap();
        assert_eq!(
            (g.product.as_deref(), g.version.as_deref()),
            (Some("ProFTPD"), Some("1.3.8"))
        );
        let g = guess(25, b"220 mail.example ESMTP Postfix (Debian/GNU)\r\n").unwrap();
        assert_eq!(
            (g.name.as_str(), g.product.as_deref()),
            ("smtp", Some("Postfix smtpd"))
        );
        let g = guess(25, b"220 mx ESMTP Exim 4.96 Mon, 1 Jan 2024\r\n").unwrap();
        assert_eq!(
            (g.product.as_deref(), g.version.as_deref()),
            (Some("Exim smtpd"), Some("4.96"))
        );
        let g = guess(
            8080,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nServer: nginx/1.22.1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (g.name.as_str(), g.product.as_deref(), g.version.as_deref()),
            ("http", Some("nginx"), Some("1.22.1"))
        );
        let g = guess(
            80,
            b"HTTP/1.0 404 Not Found\r\nserver: Apache/2.4.57 (Debian)\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (
                g.product.as_deref(),
                g.version.as_deref(),
                g.extrainfo.as_deref()
            ),
            (Some("Apache httpd"), Some("2.4.57"), Some("Debian"))
        );
        let g = guess(80, b"HTTP/1.0 200 OK\r\n\r\n").unwrap();
        assert_eq!((g.name.as_str(), g.product.as_deref()), ("http", None));
        let mut mysql = vec![0x4a, 0, 0, 0, 0x0a];
        mysql.extend_from_slice(b"8.0.36\0rest-of-handshake");
        let g = guess(3306, &mysql).unwrap();
        assert_eq!(
            (g.product.as_deref(), g.version.as_deref()),
            (Some("MySQL"), Some("8.0.36"))
        );
        let mut maria = vec![0x5a, 0, 0, 0, 0x0a];
        maria.extend_from_slice(b"5.5.5-10.11.6-MariaDB-0+deb12u1\0...");
        let g = guess(3306, &maria).unwrap();
        assert_eq!(
            (g.product.as_deref(), g.version.as_deref()),
            (Some("MariaDB"), Some("10.11.6"))
        );
        let g = guess(5900, b"RFB 003.008\n").unwrap();
        assert_eq!(
            (g.name.as_str(), g.extrainfo.as_deref()),
            ("vnc", Some("protocol 3.8"))
        );
        let g = guess(23, &[0xff, 0xfd, 0x18, 0xff, 0xfd, 0x20]).unwrap();
        assert_eq!(g.name, "telnet");
        let g = guess(110, b"+OK Dovecot (Debian) ready.\r\n").unwrap();
        assert_eq!(
            (g.name.as_str(), g.product.as_deref()),
            ("pop3", Some("Dovecot pop3d"))
        );
        let g = guess(143, b"* OK [CAPABILITY IMAP4rev1] ready\r\n").unwrap();
        assert_eq!(g.name, "imap");
        // Unknown greeting: the port table, at table confidence.
        let g = guess(6379, b"garbage").unwrap();
        assert_eq!((g.name.as_str(), g.method, g.conf), ("redis", "table", 3));
        assert_eq!(guess(6379, b""), guess(6379, b"garbage"));
        assert!(guess(40000, b"").is_none());
    }

    #[test]
    fn utc() {
        assert_eq!(utc_string(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_string(1_795_319_348), "2026-11-22 03:49:08 UTC");
        assert_eq!(utc_string(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn xml_escaping() {
        assert_eq!(
            xml_escape("a<b>&\"c'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;c&apos; "
        );
    }
}
