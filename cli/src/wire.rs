//! Plain HTTP/1.1 keep-alive connections for the CLI's bulk work: `custody bench`
//! (one connection per bench thread, written and read on that thread, [`Conn`],
//! for batches; or many on one thread's event loop, `crate::mux`, for one event or
//! proof per request) and `custody audit`'s tile fetches ([`Conn`]), all parsing
//! answers with [`read_answer`].
//!
//! The bench shares the machine with the node it measures, so what it spends per
//! request is taken from the node, and the audit's own CPU is what bounds its
//! rate. A general client (reqwest's blocking one) hands every request to its own
//! I/O thread and back, two thread switches per request, and copies each body on
//! the way; here a request is one `write` of its bytes and the reads of its
//! answer, on the thread that waits for it. Only what these need is spoken:
//! `http://` URLs, answers framed by `Content-Length`, chunked, or the end of the
//! connection; no redirects (the audit hands those to the CLI's client).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Longest status line or header line accepted from the node.
const MAX_LINE: usize = 16 * 1024;
/// Most header lines accepted in one answer.
const MAX_HEADERS: usize = 100;
/// Largest answer body accepted (a batch of 10,000 receipts is ~18 MB).
const MAX_BODY: usize = 256 << 20;

/// Where the bench sends its requests.
#[derive(Debug, Clone)]
pub struct Target {
    /// The `Host` header: `host[:port]` as given.
    host: String,
    /// The base URL's path (e.g. `/custody` behind a proxy), put before every path.
    prefix: String,
    addrs: Vec<SocketAddr>,
    timeout: Duration,
}

impl Target {
    /// Whether every address the node's name resolved to is on this machine.
    pub fn is_loopback(&self) -> bool {
        !self.addrs.is_empty() && self.addrs.iter().all(|a| a.ip().is_loopback())
    }

    /// From a node's base URL, e.g. `http://127.0.0.1:7878`.
    pub fn new(base: &str, timeout: Duration) -> Result<Target> {
        let Some(rest) = base.strip_prefix("http://") else {
            bail!(
                "custody bench speaks plain HTTP to the node it measures; {base:?} is not an \
                 http:// URL (expected e.g. http://127.0.0.1:7878)"
            );
        };
        let (host, prefix) = match rest.find('/') {
            Some(i) => (
                rest[..i].to_owned(),
                rest[i..].trim_end_matches('/').to_owned(),
            ),
            None => (rest.to_owned(), String::new()),
        };
        if host.is_empty() {
            bail!("the node URL {base:?} names no host (expected e.g. http://127.0.0.1:7878)");
        }
        let with_port = if host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']')) {
            host.clone()
        } else {
            format!("{host}:80")
        };
        let addrs: Vec<SocketAddr> = with_port
            .to_socket_addrs()
            .with_context(|| format!("resolving the node's address {with_port}"))?
            .collect();
        if addrs.is_empty() {
            bail!("the node's address {with_port} resolves to nothing");
        }
        Ok(Target {
            host,
            prefix,
            addrs,
            timeout,
        })
    }

    /// The node's base URL, rebuilt from its host and path (no trailing `/`).
    pub fn base(&self) -> String {
        format!("http://{}{}", self.host, self.prefix)
    }

    /// The node's addresses, as the URL's host resolved.
    pub(crate) fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// How long an answer may take.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The bytes of a whole request, for sending later as they are.
    pub fn request(&self, method: &str, path: &str, json_body: Option<&[u8]>) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + json_body.map_or(0, <[u8]>::len));
        out.extend_from_slice(
            format!(
                "{method} {}{path} HTTP/1.1\r\nHost: {}\r\n",
                self.prefix, self.host
            )
            .as_bytes(),
        );
        if let Some(body) = json_body {
            out.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body);
        } else {
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

/// What went wrong on the wire, as the bench counts it.
#[derive(Debug)]
pub enum WireError {
    Connect(std::io::Error),
    Timeout,
    /// The connection broke, or the answer was not HTTP/1.1 as expected.
    Transport(String),
}

impl WireError {
    /// The name the bench counts this error under.
    pub fn code(&self) -> &'static str {
        match self {
            WireError::Connect(_) => "connect",
            WireError::Timeout => "timeout",
            WireError::Transport(_) => "transport",
        }
    }

    pub(crate) fn io(e: std::io::Error) -> WireError {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => WireError::Timeout,
            _ => WireError::Transport(e.to_string()),
        }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Connect(e) => write!(f, "cannot connect to the node: {e}"),
            WireError::Timeout => write!(f, "the node did not answer in time"),
            WireError::Transport(s) => write!(f, "{s}"),
        }
    }
}

/// One keep-alive connection, opened on first use and again after it closes. Each
/// exchange must end within the target's timeout as a whole, not only between two
/// reads: a node that sends its answer a byte at a time cannot hold a request
/// open for longer (as reqwest's `timeout` bounds a whole request).
pub struct Conn<'t> {
    target: &'t Target,
    stream: Option<BufReader<Timed>>,
}

/// A connection whose reads end at a deadline: each read waits at most for what
/// is left of it.
struct Timed {
    s: TcpStream,
    deadline: Option<std::time::Instant>,
}

impl Read for Timed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the answer did not arrive in time",
                ));
            }
            self.s.set_read_timeout(Some(left))?;
        }
        self.s.read(buf)
    }
}

impl<'t> Conn<'t> {
    pub fn new(target: &'t Target) -> Conn<'t> {
        Conn {
            target,
            stream: None,
        }
    }

    fn connect(&mut self) -> Result<&mut BufReader<Timed>, WireError> {
        if self.stream.is_none() {
            let t = self.target;
            let mut last = None;
            let mut connected = None;
            for a in &t.addrs {
                match TcpStream::connect_timeout(a, t.timeout) {
                    Ok(s) => {
                        connected = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let s = connected.ok_or_else(|| {
                WireError::Connect(last.unwrap_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address to connect to")
                }))
            })?;
            let _ = s.set_nodelay(true);
            s.set_read_timeout(Some(t.timeout))
                .and_then(|_| s.set_write_timeout(Some(t.timeout)))
                .map_err(WireError::Connect)?;
            let timed = Timed { s, deadline: None };
            self.stream = Some(BufReader::with_capacity(64 * 1024, timed));
        }
        // Infallible: set just above if it was empty.
        Ok(self.stream.as_mut().expect("connected"))
    }

    /// Sends a request made by [`Target::request`] and reads its answer: the status
    /// and the body. A kept-alive connection that the node had closed before this
    /// request is opened again once, and the request sent again.
    pub fn send(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), WireError> {
        let reused = self.stream.is_some();
        match self.exchange(request) {
            Err(Attempt::NothingBack(_)) if reused => {
                self.stream = None;
                self.exchange(request).map_err(Attempt::into_error)
            }
            other => other.map_err(Attempt::into_error),
        }
    }

    fn exchange(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), Attempt> {
        let timeout = self.target.timeout;
        let stream = self.connect().map_err(Attempt::Failed)?;
        stream.get_mut().deadline = Some(std::time::Instant::now() + timeout);
        if let Err(e) = stream.get_mut().s.write_all(request) {
            self.stream = None;
            // A request not fully written cannot have been taken.
            return Err(if closed(&e) {
                Attempt::NothingBack(WireError::io(e))
            } else {
                Attempt::Failed(WireError::io(e))
            });
        }
        match read_answer(stream) {
            Ok((status, body, keep)) => {
                if !keep {
                    self.stream = None;
                }
                Ok((status, body))
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }
}

/// How far one exchange got before failing.
pub(crate) enum Attempt {
    /// The connection was found closed before one byte of an answer came back (a
    /// kept-alive connection the node had closed): the request was not taken.
    NothingBack(WireError),
    /// Anything else, a timeout included: the node may have taken the request, so
    /// it is not sent again (an append sent twice would come back a duplicate).
    Failed(WireError),
}

/// Whether an I/O error says the connection was already closed.
pub(crate) fn closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof
    )
}

impl Attempt {
    pub(crate) fn into_error(self) -> WireError {
        match self {
            Attempt::NothingBack(e) | Attempt::Failed(e) => e,
        }
    }
}

fn broken(what: impl Into<String>) -> Attempt {
    Attempt::Failed(WireError::Transport(what.into()))
}

/// Reads one line ending in CRLF (or LF), without it.
fn line(r: &mut impl BufRead, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    let n = r.by_ref().take(MAX_LINE as u64).read_until(b'\n', buf)?;
    if n > 0 && buf.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a line of the answer is longer than {MAX_LINE} bytes or cut short"),
        ));
    }
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok(n)
}

/// Reads a status line, headers and body (past any interim 1xx answer); says
/// whether the connection stays open.
pub(crate) fn read_answer(r: &mut impl BufRead) -> Result<(u16, Vec<u8>, bool), Attempt> {
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let status_line = match line(r, &mut buf) {
            Ok(0) if first => {
                return Err(Attempt::NothingBack(WireError::Transport(
                    "the node closed the connection without answering".into(),
                )))
            }
            Ok(0) => {
                return Err(broken(
                    "the node closed the connection after an interim answer",
                ))
            }
            Ok(_) => String::from_utf8_lossy(&buf).into_owned(),
            Err(e) if first && buf.is_empty() && closed(&e) => {
                return Err(Attempt::NothingBack(WireError::io(e)))
            }
            Err(e) => return Err(Attempt::Failed(WireError::io(e))),
        };
        first = false;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: u16 = match (version.starts_with("HTTP/1."), parts.next().map(str::parse)) {
            (true, Some(Ok(s))) => s,
            _ => {
                return Err(broken(format!(
                    "not an HTTP/1.x status line: {status_line:?}"
                )))
            }
        };
        let head = read_head(r, &mut buf)?;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        let mut keep = (version == "HTTP/1.1" && !head.close) || head.keep_alive;
        let body = if head.chunked {
            read_chunked(r, &mut buf)?
        } else if let Some(n) = head.length {
            if n > MAX_BODY {
                return Err(broken(format!(
                    "the answer's body of {n} bytes is over {MAX_BODY}"
                )));
            }
            let mut body = vec![0; n];
            r.read_exact(&mut body)
                .map_err(|e| Attempt::Failed(WireError::io(e)))?;
            body
        } else if matches!(status, 101 | 204 | 304) {
            Vec::new()
        } else {
            keep = false;
            let mut body = Vec::new();
            r.take(MAX_BODY as u64 + 1)
                .read_to_end(&mut body)
                .map_err(|e| Attempt::Failed(WireError::io(e)))?;
            if body.len() > MAX_BODY {
                return Err(broken(format!(
                    "the answer's body is over {MAX_BODY} bytes"
                )));
            }
            body
        };
        return Ok((status, body, keep));
    }
}

/// What the bench needs of an answer's header lines.
#[derive(Default)]
struct Head {
    length: Option<usize>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

/// Reads header lines up to the empty line that ends them.
fn read_head(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<Head, Attempt> {
    let mut head = Head::default();
    for _ in 0..=MAX_HEADERS {
        if line(r, buf).map_err(|e| Attempt::Failed(WireError::io(e)))? == 0 {
            return Err(broken(
                "the node closed the connection in the middle of an answer",
            ));
        }
        if buf.is_empty() {
            return Ok(head);
        }
        let text = String::from_utf8_lossy(buf);
        let Some((name, value)) = text.split_once(':') else {
            return Err(broken(format!("not a header line: {text:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            head.length = Some(
                value
                    .parse()
                    .map_err(|_| broken(format!("Content-Length {value:?} is not a number")))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            head.close |= value.eq_ignore_ascii_case("close");
            head.keep_alive |= value.eq_ignore_ascii_case("keep-alive");
        }
    }
    Err(broken(format!(
        "the answer has more than {MAX_HEADERS} header lines"
    )))
}

fn read_chunked(r: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<Vec<u8>, Attempt> {
    let io = |e: std::io::Error| Attempt::Failed(WireError::io(e));
    let cut = || broken("the node closed the connection in the middle of a chunked answer");
    let mut body = Vec::new();
    loop {
        if line(r, buf).map_err(io)? == 0 {
            return Err(cut());
        }
        let text = String::from_utf8_lossy(buf);
        let size = text.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size, 16)
            .map_err(|_| broken(format!("not a chunk size: {text:?}")))?;
        if n == 0 {
            // Trailer lines, up to the empty line.
            loop {
                if line(r, buf).map_err(io)? == 0 {
                    return Err(cut());
                }
                if buf.is_empty() {
                    return Ok(body);
                }
            }
        }
        let at = body.len();
        match at.checked_add(n) {
            Some(end) if end <= MAX_BODY => body.resize(end, 0),
            _ => {
                return Err(broken(format!(
                    "the answer's body is over {MAX_BODY} bytes"
                )))
            }
        }
        r.read_exact(&mut body[at..]).map_err(io)?;
        if line(r, buf).map_err(io)? == 0 {
            return Err(cut());
        }
        if !buf.is_empty() {
            return Err(broken("a chunk is longer than its size says"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn answer(raw: &str) -> Result<(u16, Vec<u8>, bool), String> {
        read_answer(&mut Cursor::new(raw.as_bytes().to_vec()))
            .map_err(|e| e.into_error().to_string())
    }

    /// A node that sends its answer a byte every 20 ms, each read well inside the
    /// per-read timeout, is cut off when the exchange's own deadline passes: the
    /// 200 bytes would take 4 s, the deadline is 0.5 s.
    #[test]
    fn a_dripping_answer_ends_at_the_exchange_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n");
            for _ in 0..200 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let t = Target::new(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_millis(500),
        )
        .unwrap();
        let got = Conn::new(&t).send(&t.request("GET", "/tile/entries/000", None));
        assert!(matches!(got, Err(WireError::Timeout)), "{got:?}");
    }

    #[test]
    fn answers_are_framed_by_length_chunks_or_close() {
        let (s, b, keep) =
            answer("HTTP/1.1 201 Created\r\ncontent-length: 5\r\nx: y\r\n\r\nhelloNEXT").unwrap();
        assert_eq!((s, b.as_slice(), keep), (201, &b"hello"[..], true));
        let (s, b, keep) = answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=1\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice(), keep), (200, &b"abcde"[..], true));
        let (s, b, keep) = answer("HTTP/1.0 503 Busy\r\n\r\nuntil the end").unwrap();
        assert_eq!((s, b.as_slice(), keep), (503, &b"until the end"[..], false));
        let (_, _, keep) =
            answer("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert!(!keep);
    }

    #[test]
    fn broken_answers_are_named() {
        assert!(answer("").unwrap_err().contains("without answering"));
        assert!(answer("SMTP 220 hello\r\n\r\n")
            .unwrap_err()
            .contains("status line"));
        assert!(answer("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
            .unwrap_err()
            .contains("Content-Length"));
        assert!(answer("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(answer(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n"
        )
        .unwrap_err()
        .contains("chunk"));
    }

    #[test]
    fn interim_answers_are_skipped_and_sizes_are_capped() {
        let (s, b, _) = answer(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (201, &b"ok"[..]));
        assert!(
            answer("HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n")
                .unwrap_err()
                .contains("over")
        );
        assert!(answer(&format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
            usize::MAX
        ))
        .unwrap_err()
        .contains("over"));
        assert!(
            answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n")
                .unwrap_err()
                .contains("middle of a chunked answer")
        );
    }

    /// Only a connection found closed before any answer is tried again: a timeout,
    /// or an answer cut short, may mean the node took the request.
    #[test]
    fn a_request_the_node_may_have_taken_is_not_sent_again() {
        use std::net::TcpListener;
        use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = seen.clone();
        let (timed_out, client_timed_out) = std::sync::mpsc::channel::<()>();
        // Two kept-alive connections: on each the first request is answered; then
        // the first connection's second request gets no answer until the client says
        // it has timed out (a channel, not a sleep, so a slow machine cannot reorder
        // the two), the second's gets half a status line before the close.
        let server = std::thread::spawn(move || {
            for conn in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut buf = Vec::new();
                for request in 0..2 {
                    while line(&mut r, &mut buf).unwrap() > 0 && !buf.is_empty() {}
                    let mut body = [0u8; 2];
                    r.read_exact(&mut body).unwrap();
                    counted.fetch_add(1, SeqCst);
                    match (conn, request) {
                        (_, 0) => s
                            .write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
                            .unwrap(),
                        (0, _) => client_timed_out.recv().unwrap(),
                        _ => s.write_all(b"HTTP/1.1 20").unwrap(),
                    }
                }
            }
            // Nothing was sent again on a third connection.
            listener.set_nonblocking(true).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            assert!(listener.accept().is_err(), "a request was sent again");
        });
        let t = Target::new(
            &format!("http://127.0.0.1:{port}/"),
            Duration::from_millis(1000),
        )
        .unwrap();
        let req = t.request("POST", "/v1/events", Some(b"{}"));
        let mut c = Conn::new(&t);
        assert_eq!(c.send(&req).unwrap().0, 201);
        assert_eq!(c.send(&req).unwrap_err().code(), "timeout");
        timed_out.send(()).unwrap();
        assert_eq!(c.send(&req).unwrap().0, 201);
        assert_eq!(c.send(&req).unwrap_err().code(), "transport");
        server.join().unwrap();
        assert_eq!(seen.load(SeqCst), 4, "each request sent once");
    }

    #[test]
    fn a_closed_keep_alive_connection_is_opened_again() {
        use std::net::TcpListener;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // Answers one request per connection, then closes it without saying so.
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut buf = Vec::new();
                while line(&mut r, &mut buf).unwrap() > 0 && !buf.is_empty() {}
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
        });
        let t = Target::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(5)).unwrap();
        let req = t.request("GET", "/healthz", None);
        assert!(
            String::from_utf8_lossy(&req).starts_with("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:")
        );
        let mut c = Conn::new(&t);
        assert_eq!(c.send(&req).unwrap(), (200, b"ok".to_vec()));
        assert_eq!(c.send(&req).unwrap(), (200, b"ok".to_vec()));
        server.join().unwrap();
        let behind = Target::new(
            &format!("http://127.0.0.1:{port}/custody/"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(
            String::from_utf8_lossy(&behind.request("GET", "/checkpoint", None))
                .starts_with("GET /custody/checkpoint HTTP/1.1\r\n")
        );
        assert!(Target::new("https://example.org", Duration::from_secs(1))
            .unwrap_err()
            .to_string()
            .contains("plain HTTP"));
    }
}
