//! The bench's event loop: many keep-alive connections driven from one thread, as
//! redis-benchmark and wrk do, for runs of many small requests (single appends,
//! proofs at high concurrency).
//!
//! With a thread per connection, 256 connections are 256 threads that each sleep in
//! `read` and are woken for every answer: on a 2-core machine shared with the node,
//! those switches are cores taken from what is measured. Here one thread waits on
//! all sockets at once (epoll through `mio`) and handles every answer that is ready
//! per wake-up. The requests and the answers are the same bytes as on
//! [`crate::wire::Conn`], parsed by the same code, with the same rule for sending a
//! request again: only on a kept-alive connection found closed before one byte of
//! an answer came back.

use crate::wire::{self, Target, WireError};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{BufRead, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// An answer read off a connection: status and body.
pub type Answer = (u16, Vec<u8>);

/// What a parse of the bytes received so far found.
enum Parsed {
    /// A whole answer, whether the connection stays open, and the bytes it took.
    Whole(Answer, bool, usize),
    /// Not yet: wait until at least this many bytes have arrived (or the end).
    Short(usize),
    Broken(WireError),
}

/// The bytes received so far, read as a [`BufRead`] that notes whether the parser
/// wanted more than there is, and how much.
struct Received<'a> {
    data: &'a [u8],
    pos: usize,
    wanted: Option<usize>,
}

impl Received<'_> {
    fn want(&mut self, upto: usize) {
        self.wanted = Some(self.wanted.unwrap_or(0).max(upto));
    }
}

impl Read for Received<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = &self.data[self.pos..];
        if left.len() < buf.len() {
            self.want(self.pos + buf.len());
        }
        let n = left.len().min(buf.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.pos += n;
        Ok(n)
    }
}

impl BufRead for Received<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.pos == self.data.len() {
            self.want(self.pos + 1);
        }
        Ok(&self.data[self.pos..])
    }
    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// Parses `data` as one answer; `ended`: the node has closed the connection, so
/// nothing more will come.
fn parse(data: &[u8], ended: bool) -> Parsed {
    let mut r = Received {
        data,
        pos: 0,
        wanted: None,
    };
    let got = wire::read_answer(&mut r);
    match (got, r.wanted) {
        (Ok((status, body, keep)), None) => Parsed::Whole((status, body), keep, r.pos),
        // A body that runs to the end of the connection reads past what there is.
        (Ok((status, body, _)), Some(_)) if ended => {
            Parsed::Whole((status, body), false, data.len())
        }
        (Ok(_), Some(n)) => Parsed::Short(n),
        (Err(_), Some(n)) if !ended => Parsed::Short(n),
        (Err(_), Some(_)) if data.is_empty() => Parsed::Broken(WireError::Transport(
            "the node closed the connection without answering".into(),
        )),
        (Err(_), Some(_)) => Parsed::Broken(WireError::Transport(
            "the node closed the connection in the middle of its answer".into(),
        )),
        (Err(e), None) => Parsed::Broken(e.into_error()),
    }
}

/// What every connection of the loop shares.
struct Lp {
    poll: Poll,
    addr: SocketAddr,
    timeout: Duration,
    /// Requests in flight on one connection at most (1: no pipelining).
    depth: usize,
}

/// A request on a connection, written or waiting to be, and not answered yet.
struct Flight<T> {
    tag: T,
    /// Where its latency counts from: when it was handed to the connection, or on a
    /// schedule, when it was due.
    started: Instant,
    /// When it was handed to the connection: it runs out of time from then.
    sent: Instant,
    request: Vec<u8>,
    /// This request was already sent again once.
    resent: bool,
}

/// One connection and the requests on it, answered in the order they were sent.
struct Slot<T> {
    stream: Option<TcpStream>,
    /// The connect has completed (a first writable event).
    connected: bool,
    /// The stream has answered a request before (kept alive).
    reused: bool,
    /// The bytes of the requests in flight not yet written, in order.
    out: Vec<u8>,
    written: usize,
    received: Vec<u8>,
    /// Parse again once this many bytes are in.
    need: usize,
    flights: VecDeque<Flight<T>>,
}

/// How a connection broke.
enum Broke {
    /// A kept-alive connection found closed before any byte of an answer: its
    /// unanswered requests were not taken, and go once more on a new connection.
    NothingBack(WireError),
    /// Anything else: the node may have taken them, so they fail.
    Failed(WireError),
}

/// Requests sent on a fixed schedule: the k-th (from 0) is due k / `per_sec` seconds
/// after the start, whether or not the earlier ones have been answered, and goes on
/// the connection that has been free longest. Its latency counts from when it was
/// due, so a wait for a free connection counts as well (no coordinated omission:
/// a node that stalls cannot hide the requests it held up).
struct Schedule<T> {
    start: Instant,
    per_sec: f64,
    /// Requests handed to a connection so far.
    taken: u64,
    /// The next request, taken from `next` ahead of its time.
    ahead: Option<(T, Vec<u8>)>,
    exhausted: bool,
    /// Connections that can take another request, each listed once, longest free first.
    free: VecDeque<usize>,
    listed: Vec<bool>,
    /// For each request sent, how long after it was due it was handed to a
    /// connection: the loop's own lateness (its wake-ups are whole milliseconds)
    /// and any wait for a free connection.
    late: Vec<Duration>,
}

impl<T> Schedule<T> {
    fn new(per_sec: f64, connections: usize) -> Schedule<T> {
        Schedule {
            start: Instant::now(),
            per_sec,
            taken: 0,
            ahead: None,
            exhausted: false,
            free: (0..connections).collect(),
            listed: vec![true; connections],
            late: Vec::new(),
        }
    }

    fn due(&self) -> Instant {
        self.start + Duration::from_secs_f64(self.taken as f64 / self.per_sec)
    }

    /// Lists connection `i` as free if it can take another request.
    fn offer(&mut self, i: usize, s: &Slot<T>, depth: usize) {
        if s.flights.len() < depth && !self.listed[i] {
            self.listed[i] = true;
            self.free.push_back(i);
        }
    }

    /// Whether there is a next request (taking it from `next` if need be).
    fn pending(&mut self, next: &mut impl FnMut() -> Option<(T, Vec<u8>)>) -> bool {
        if self.ahead.is_none() && !self.exhausted {
            self.ahead = next();
            self.exhausted = self.ahead.is_none();
        }
        self.ahead.is_some()
    }

    /// When the loop must wake to send the next request: when it is due, if a
    /// connection is free for it (else an answer will wake the loop first).
    fn wake(&self) -> Option<Instant> {
        (self.ahead.is_some() && !self.free.is_empty()).then(|| self.due())
    }
}

/// Hands every request already due to a free connection.
fn dispatch<T>(
    lp: &Lp,
    slots: &mut [Slot<T>],
    sc: &mut Schedule<T>,
    next: &mut impl FnMut() -> Option<(T, Vec<u8>)>,
    done: &mut impl FnMut(T, Instant, Result<Answer, WireError>),
) {
    while sc.pending(next) {
        let due = sc.due();
        if due > Instant::now() {
            return;
        }
        let Some(i) = sc.free.pop_front() else {
            return;
        };
        sc.listed[i] = false;
        let s = &mut slots[i];
        if s.flights.len() >= lp.depth {
            continue;
        }
        let (tag, request) = sc.ahead.take().expect("a pending request");
        sc.taken += 1;
        s.out.extend_from_slice(&request);
        let sent = Instant::now();
        sc.late.push(sent.saturating_duration_since(due));
        s.flights.push_back(Flight {
            tag,
            started: due,
            sent,
            request,
            resent: false,
        });
        if let Err(broke) = transmit(lp, s, i) {
            lost(lp, s, i, broke, done);
        }
        sc.offer(i, s, lp.depth);
    }
}

/// Sends every request `next` yields over `connections` keep-alive connections at
/// once, from this thread, up to `depth` of them in flight on each connection
/// (HTTP/1.1 pipelining past 1: written one after another, answered in order), and
/// hands each answer (or what went wrong) to `done` with the moment its request was
/// started. Without `rate`, each connection sends its next request as soon as one of
/// its own is answered; with it, requests go out on a fixed schedule of `rate` a
/// second ([`Schedule`]) and each is "started" when it was due. Returns when `next`
/// yields nothing more and every request sent has been answered or failed; on a
/// schedule, with how late each request was sent (in the order sent).
pub fn run<T>(
    target: &Target,
    connections: usize,
    depth: usize,
    rate: Option<f64>,
    mut next: impl FnMut() -> Option<(T, Vec<u8>)>,
    mut done: impl FnMut(T, Instant, Result<Answer, WireError>),
) -> std::io::Result<Vec<Duration>> {
    // One address for every connection: a name that resolves to several (localhost)
    // most often names a node listening on IPv4 (the node's default). A node that
    // listens only on another of them: use --thread-per-connection, whose
    // connections try each address in turn.
    let addrs = target.addrs();
    let addr = *addrs.iter().find(|a| a.is_ipv4()).unwrap_or(&addrs[0]);
    let mut lp = Lp {
        poll: Poll::new()?,
        addr,
        timeout: target.timeout(),
        depth: depth.max(1),
    };
    let mut events = Events::with_capacity(1024);
    let mut slots: Vec<Slot<T>> = (0..connections.max(1))
        .map(|_| Slot {
            stream: None,
            connected: false,
            reused: false,
            out: Vec::new(),
            written: 0,
            received: Vec::with_capacity(4096),
            need: 0,
            flights: VecDeque::with_capacity(lp.depth),
        })
        .collect();
    let mut paced = rate.map(|r| Schedule::new(r, slots.len()));
    if paced.is_none() {
        for (i, s) in slots.iter_mut().enumerate() {
            fill(&lp, s, i, &mut next, &mut done);
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(sc) = paced.as_mut() {
            dispatch(&lp, &mut slots, sc, &mut next, &mut done);
        }
        // Wake up in time for the first request to run out of time (or, on a
        // schedule, for the next to be sent).
        let now = Instant::now();
        let first_timeout = slots
            .iter()
            .filter_map(|s| s.flights.front().map(|f| f.sent + lp.timeout))
            .min()
            .map(|t| t + Duration::from_millis(1));
        let send = paced.as_ref().and_then(Schedule::wake);
        let Some(wake) = first_timeout.into_iter().chain(send).min() else {
            return Ok(paced.map(|sc| sc.late).unwrap_or_default());
        };
        let wait = wake.saturating_duration_since(now);
        match lp.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let s = &mut slots[i];
            if s.flights.is_empty() {
                continue;
            }
            let writable = ev.is_writable() || ev.is_error();
            if let Err(broke) = advance(&lp, s, &mut buf, writable, &mut done) {
                lost(&lp, s, i, broke, &mut done);
            }
            match paced.as_mut() {
                Some(sc) => sc.offer(i, s, lp.depth),
                None => fill(&lp, s, i, &mut next, &mut done),
            }
        }
        let now = Instant::now();
        for (i, s) in slots.iter_mut().enumerate() {
            if s.flights
                .front()
                .is_some_and(|f| now >= f.sent + lp.timeout)
            {
                // The node may have taken them: never sent again. The others on the
                // connection go with it, since it is closed.
                close(&lp, s);
                for f in std::mem::take(&mut s.flights) {
                    done(f.tag, f.started, Err(WireError::Timeout));
                }
                match paced.as_mut() {
                    Some(sc) => sc.offer(i, s, lp.depth),
                    None => fill(&lp, s, i, &mut next, &mut done),
                }
            }
        }
    }
}

/// Takes requests for slot `i` until `depth` are in flight (or there are no more)
/// and starts writing them; a request that cannot even be sent is answered at once.
fn fill<T>(
    lp: &Lp,
    s: &mut Slot<T>,
    i: usize,
    next: &mut impl FnMut() -> Option<(T, Vec<u8>)>,
    done: &mut impl FnMut(T, Instant, Result<Answer, WireError>),
) {
    loop {
        let before = s.flights.len();
        while s.flights.len() < lp.depth {
            let Some((tag, request)) = next() else {
                break;
            };
            s.out.extend_from_slice(&request);
            let now = Instant::now();
            s.flights.push_back(Flight {
                tag,
                started: now,
                sent: now,
                request,
                resent: false,
            });
        }
        if s.flights.len() == before {
            return;
        }
        match transmit(lp, s, i) {
            Ok(()) => return,
            Err(broke) => lost(lp, s, i, broke, done),
        }
    }
}

/// Writes the slot's pending requests, on its open connection or a new one.
fn transmit<T>(lp: &Lp, s: &mut Slot<T>, i: usize) -> Result<(), Broke> {
    if s.stream.is_none() {
        s.written = 0;
        s.received.clear();
        s.need = 0;
        let connect = |e| Broke::Failed(WireError::Connect(e));
        let mut stream = TcpStream::connect(lp.addr).map_err(connect)?;
        let _ = stream.set_nodelay(true);
        lp.poll
            .registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(connect)?;
        s.stream = Some(stream);
        s.connected = false;
        s.reused = false;
        // Written once the connect completes (the first writable event).
        return Ok(());
    }
    if s.connected {
        write_some(s)?;
    }
    Ok(())
}

/// The slot's connection broke: it is closed, and its unanswered requests are sent
/// once more on a new connection (a kept-alive one closed before answering them, and
/// only once each) or fail.
fn lost<T>(
    lp: &Lp,
    s: &mut Slot<T>,
    i: usize,
    mut broke: Broke,
    done: &mut impl FnMut(T, Instant, Result<Answer, WireError>),
) {
    loop {
        close(lp, s);
        s.out.clear();
        let (again, e) = match broke {
            Broke::NothingBack(e) => (true, e),
            Broke::Failed(e) => (false, e),
        };
        let mut e = Some(e);
        for mut f in std::mem::take(&mut s.flights) {
            if again && !f.resent {
                f.resent = true;
                s.out.extend_from_slice(&f.request);
                s.flights.push_back(f);
            } else {
                let err = match e.take() {
                    Some(e) => e,
                    None => WireError::Transport(
                        "the connection broke with an earlier request's answer".into(),
                    ),
                };
                done(f.tag, f.started, Err(err));
            }
        }
        if s.flights.is_empty() {
            return;
        }
        match transmit(lp, s, i) {
            Ok(()) => return,
            Err(b) => broke = b,
        }
    }
}

/// Closes the slot's connection, if it has one.
fn close<T>(lp: &Lp, s: &mut Slot<T>) {
    if let Some(mut stream) = s.stream.take() {
        let _ = lp.poll.registry().deregister(&mut stream);
    }
    s.written = 0;
    s.received.clear();
    s.need = 0;
}

/// Writes what the socket takes of the pending requests.
fn write_some<T>(s: &mut Slot<T>) -> Result<(), Broke> {
    let Some(stream) = s.stream.as_mut() else {
        return Ok(());
    };
    while s.written < s.out.len() {
        match stream.write(&s.out[s.written..]) {
            Ok(0) => return Err(Broke::Failed(WireError::Transport("wrote nothing".into()))),
            Ok(n) => s.written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A request not fully written cannot have been taken.
            Err(e) if s.reused && wire::closed(&e) => {
                return Err(Broke::NothingBack(WireError::io(e)))
            }
            Err(e) if !s.connected || e.kind() == ErrorKind::ConnectionRefused => {
                return Err(Broke::Failed(WireError::Connect(e)))
            }
            Err(e) => return Err(Broke::Failed(WireError::io(e))),
        }
    }
    s.out.clear();
    s.written = 0;
    Ok(())
}

/// Moves the slot on after an event: writes, reads, and hands every whole answer
/// that has arrived to `done`, in order.
fn advance<T>(
    lp: &Lp,
    s: &mut Slot<T>,
    buf: &mut [u8],
    writable: bool,
    done: &mut impl FnMut(T, Instant, Result<Answer, WireError>),
) -> Result<(), Broke> {
    if writable && !s.connected {
        let Some(stream) = s.stream.as_ref() else {
            return Ok(());
        };
        match stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(Broke::Failed(WireError::Connect(e))),
        }
        match stream.peer_addr() {
            Ok(_) => s.connected = true,
            // Not connected yet: a later event will say.
            Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(Broke::Failed(WireError::Connect(e))),
        }
    }
    if s.connected && s.written < s.out.len() {
        write_some(s)?;
    }
    let Some(stream) = s.stream.as_mut() else {
        return Ok(());
    };
    let mut ended = false;
    loop {
        match stream.read(buf) {
            Ok(0) => {
                ended = true;
                break;
            }
            Ok(n) => s.received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if s.received.is_empty() && s.reused && wire::closed(&e) => {
                return Err(Broke::NothingBack(WireError::io(e)))
            }
            Err(e) if wire::closed(&e) => {
                ended = true;
                break;
            }
            Err(e) => return Err(Broke::Failed(WireError::io(e))),
        }
    }
    while !s.flights.is_empty() {
        // (Also with the request only partly written: that cannot have been taken.)
        if ended && s.received.is_empty() && s.reused {
            return Err(Broke::NothingBack(WireError::Transport(
                "the node closed the connection without answering".into(),
            )));
        }
        if s.received.len() < s.need && !ended {
            return Ok(());
        }
        match parse(&s.received, ended) {
            Parsed::Whole(answer, keep, used) => {
                s.received.drain(..used);
                s.need = 0;
                s.reused = true;
                let f = s.flights.pop_front().expect("a request in flight");
                done(f.tag, f.started, Ok(answer));
                if !keep || ended {
                    if s.flights.is_empty() {
                        // Closed here; the next request opens a new connection.
                        close(lp, s);
                        return Ok(());
                    }
                    // The node closes after that answer: it took none of the rest.
                    return Err(Broke::NothingBack(WireError::Transport(
                        "the node closed the connection after an earlier answer".into(),
                    )));
                }
            }
            Parsed::Short(n) => {
                s.need = n;
                return Ok(());
            }
            Parsed::Broken(e) => return Err(Broke::Failed(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;
    use std::net::TcpListener;

    const OK: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";

    #[test]
    fn an_answer_is_whole_only_once_all_its_bytes_are_in() {
        for cut in 0..OK.len() {
            match parse(&OK[..cut], false) {
                Parsed::Short(n) => assert!(n > cut && n <= OK.len(), "cut {cut}: wait for {n}"),
                _ => panic!("cut at {cut} of {} bytes is not short", OK.len()),
            }
        }
        assert!(
            matches!(parse(OK, false), Parsed::Whole((201, ref b), true, n) if b == b"ok" && n == OK.len())
        );
        // Once the body's start is in, the wait is for exactly the rest of it.
        let head = OK.len() - 2;
        assert!(matches!(parse(&OK[..head], false), Parsed::Short(n) if n == OK.len()));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n";
        assert!(matches!(parse(&chunked[..40], false), Parsed::Short(_)));
        assert!(
            matches!(parse(chunked, false), Parsed::Whole((200, ref b), true, _) if b == b"ab")
        );
        // A body framed by the end of the connection is whole only at the end.
        let to_end = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it";
        assert!(matches!(parse(to_end, false), Parsed::Short(_)));
        assert!(
            matches!(parse(to_end, true), Parsed::Whole((200, ref b), false, _) if b == b"all of it")
        );
        // Cut short by the close, or not HTTP: broken, not waited for.
        assert!(matches!(parse(&OK[..10], true), Parsed::Broken(_)));
        assert!(matches!(
            parse(b"SMTP ready\r\n\r\n", false),
            Parsed::Broken(_)
        ));
        assert!(matches!(parse(b"", true), Parsed::Broken(_)));
    }

    /// Serves `conns` connections, each with `answer(connection, request number,
    /// body, stream)` for every request read; counts the requests, and the connections
    /// still waiting to be accepted once those are done.
    fn server(
        conns: usize,
        answer: impl Fn(usize, usize, &[u8], &mut std::net::TcpStream) -> bool + Send + Sync + 'static,
    ) -> (Target, std::thread::JoinHandle<(usize, usize)>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = std::sync::Arc::new(answer);
        let h = std::thread::spawn(move || {
            let hs: Vec<_> = (0..conns)
                .map(|c| {
                    let (mut s, _) = listener.accept().unwrap();
                    let answer = answer.clone();
                    std::thread::spawn(move || {
                        let mut r = BufReader::new(s.try_clone().unwrap());
                        let mut seen = 0;
                        loop {
                            let mut line = String::new();
                            let mut length = 0;
                            loop {
                                line.clear();
                                if r.read_line(&mut line).unwrap_or(0) == 0 {
                                    return seen;
                                }
                                if line == "\r\n" {
                                    break;
                                }
                                if let Some(v) = line.strip_prefix("Content-Length: ") {
                                    length = v.trim().parse().unwrap();
                                }
                            }
                            let mut body = vec![0; length];
                            r.read_exact(&mut body).unwrap();
                            seen += 1;
                            if !answer(c, seen, &body, &mut s) {
                                return seen;
                            }
                        }
                    })
                })
                .collect();
            let requests = hs.into_iter().map(|h| h.join().unwrap()).sum();
            listener.set_nonblocking(true).unwrap();
            let waiting = std::iter::from_fn(|| listener.accept().ok()).count();
            (requests, waiting)
        });
        let t = Target::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        (t, h)
    }

    /// Runs `n` POSTs over `c` connections; each job's result in job order.
    fn drive(t: &Target, c: usize, n: usize) -> Vec<Result<Answer, String>> {
        drive_pipelined(t, c, 1, n)
    }

    /// Runs `n` POSTs over `c` connections, `depth` in flight on each; job j's body
    /// is `j` in decimal. Each job's result in job order.
    fn drive_pipelined(
        t: &Target,
        c: usize,
        depth: usize,
        n: usize,
    ) -> Vec<Result<Answer, String>> {
        let mut results: Vec<Option<Result<Answer, String>>> = (0..n).map(|_| None).collect();
        let mut k = 0;
        run(
            t,
            c,
            depth,
            None,
            || {
                k += 1;
                let body = (k - 1).to_string();
                (k <= n).then(|| {
                    (
                        k - 1,
                        t.request("POST", "/v1/events", Some(body.as_bytes())),
                    )
                })
            },
            |j, _, r| {
                assert!(results[j].is_none(), "job {j} answered twice");
                results[j] = Some(r.map_err(|e| e.code().to_owned()));
            },
        )
        .unwrap();
        results
            .into_iter()
            .map(|r| r.expect("every job answered"))
            .collect()
    }

    #[test]
    fn many_connections_from_one_thread_each_get_their_answers() {
        // Answers arrive a byte at a time on one of the connections.
        let (t, server) = server(8, |c, _, _, s| {
            if c == 0 {
                for b in OK {
                    s.write_all(&[*b]).unwrap();
                    s.flush().unwrap();
                }
            } else {
                s.write_all(OK).unwrap();
            }
            true
        });
        let results = drive(&t, 8, 400);
        assert!(results
            .iter()
            .all(|r| matches!(r, Ok((201, b)) if b == b"ok")));
        drop(t);
        assert_eq!(server.join().unwrap(), (400, 0), "each request sent once");
    }

    #[test]
    fn on_a_schedule_requests_go_when_due_and_their_wait_for_a_connection_counts() {
        // Two connections, each answering 40 ms after a request: 50 a second at
        // most, against 100 a second offered. Request k is due at 10k ms; the later
        // ones wait for a connection, and that wait is part of their latency.
        let (t, server) = server(2, |_, _, body, s| {
            std::thread::sleep(Duration::from_millis(40));
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
            s.write_all(&[head.as_bytes(), body].concat()).unwrap();
            true
        });
        let n = 10;
        let mut k = 0;
        let mut seen: Vec<Option<(Instant, Instant, Vec<u8>)>> = vec![None; n];
        let t0 = Instant::now();
        let late = run(
            &t,
            2,
            1,
            Some(100.0),
            || {
                k += 1;
                (k <= n).then(|| {
                    let body = (k - 1).to_string();
                    (
                        k - 1,
                        t.request("POST", "/v1/events", Some(body.as_bytes())),
                    )
                })
            },
            |j, started, r| {
                assert!(seen[j].is_none(), "job {j} answered twice");
                let (status, body) = r.expect("answered");
                assert_eq!(status, 200);
                seen[j] = Some((started, Instant::now(), body));
            },
        )
        .unwrap();
        // How late each went: the last (due at 90 ms) waited for one of the two
        // connections, each busy 40 ms a request, until 160 ms at the soonest.
        assert_eq!(late.len(), n);
        assert!(late[n - 1] >= Duration::from_millis(70), "{late:?}");
        let seen: Vec<_> = seen
            .into_iter()
            .map(|s| s.expect("every job answered"))
            .collect();
        let first = seen[0].0;
        assert!(first >= t0);
        for (j, (started, answered, body)) in seen.iter().enumerate() {
            assert_eq!(body, j.to_string().as_bytes(), "job {j}");
            // Started when due, to the nanosecond, not when a connection took it.
            let due = Duration::from_millis(10 * j as u64);
            let off = started.duration_since(first).abs_diff(due);
            assert!(
                off < Duration::from_micros(1),
                "job {j} started {off:?} off its due time"
            );
            // Every answer took the server's 40 ms at least.
            assert!(
                answered.duration_since(*started) >= Duration::from_millis(40),
                "job {j}"
            );
        }
        // The last is answered no sooner than 5 rounds of 40 ms after the start, so
        // its latency from its due time (90 ms) is at least 110 ms, though its
        // connection took only 40 ms over it.
        let (started, answered, _) = &seen[n - 1];
        assert!(
            answered.duration_since(*started) >= Duration::from_millis(110),
            "the wait for a free connection was left out: {:?}",
            answered.duration_since(*started)
        );
        drop(t);
        assert_eq!(server.join().unwrap(), (n, 0), "each request sent once");
    }

    #[test]
    fn on_a_schedule_a_fast_node_is_not_sent_requests_before_they_are_due() {
        let (t, server) = server(4, |_, _, _, s| {
            s.write_all(OK).unwrap();
            true
        });
        let n = 21;
        let mut k = 0;
        let mut answered = 0;
        let t0 = Instant::now();
        run(
            &t,
            4,
            1,
            Some(200.0),
            || {
                k += 1;
                (k <= n).then(|| (k, t.request("POST", "/v1/events", Some(b"x"))))
            },
            |_, _, r| {
                assert!(matches!(r, Ok((201, _))));
                answered += 1;
            },
        )
        .unwrap();
        assert_eq!(answered, n);
        // The 21st was due 100 ms after the first; it cannot have gone sooner.
        assert!(
            t0.elapsed() >= Duration::from_millis(100),
            "{:?}",
            t0.elapsed()
        );
        drop(t);
        assert_eq!(server.join().unwrap().0, n);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order_and_the_untaken_sent_again() {
        // Each answer echoes its request's body. Connection 0 answers its third
        // request with `Connection: close` and closes: the requests written after
        // it were not taken, and go again on a new connection.
        let (t, server) = server(3, |c, n, body, s| {
            let close = c == 0 && n == 3;
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n",
                body.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            s.write_all(&[head.as_bytes(), body].concat()).unwrap();
            !close
        });
        let results = drive_pipelined(&t, 2, 8, 300);
        for (j, r) in results.iter().enumerate() {
            assert!(
                matches!(r, Ok((200, b)) if b == j.to_string().as_bytes()),
                "job {j}: {r:?}"
            );
        }
        drop(t);
        let (requests, waiting) = server.join().unwrap();
        assert_eq!(waiting, 0);
        // Connection 0 read three requests and closed with up to 7 more written
        // behind them, which went again (and the third too, if the close reset the
        // connection before its answer was read).
        assert!(
            (300..=308).contains(&requests),
            "{requests} requests read for 300 jobs"
        );
    }

    #[test]
    fn only_a_request_on_a_connection_closed_before_any_answer_is_sent_again() {
        // Connection 0: the first request is answered, the second gets no answer
        // (the connection is closed: it was never taken) and goes again on
        // connection 1, whose first is answered and whose second gets half a status
        // line (it may have been taken: not sent again).
        let (t, server) = server(2, |c, n, _, s| match (c, n) {
            (_, 1) => {
                s.write_all(OK).unwrap();
                true
            }
            (0, _) => false,
            _ => {
                s.write_all(b"HTTP/1.1 20").unwrap();
                false
            }
        });
        let results = drive(&t, 1, 3);
        assert!(matches!(&results[0], Ok((201, _))));
        assert!(matches!(&results[1], Ok((201, _))), "{:?}", results[1]);
        assert_eq!(results[2], Err("transport".to_owned()));
        drop(t);
        // Four requests in all, on the two connections: nothing was sent a third time.
        assert_eq!(server.join().unwrap(), (4, 0));
    }

    #[test]
    fn a_request_without_an_answer_times_out_and_is_not_sent_again() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        let (t, server) = server(1, move |_, _, _, _| {
            // Hold the answer until the client has timed out, then close.
            released.lock().unwrap().recv().unwrap();
            false
        });
        let t = Target::new(
            &format!("http://{}", t.addrs()[0]),
            Duration::from_millis(300),
        )
        .unwrap();
        let started = Instant::now();
        let results = drive(&t, 1, 1);
        assert_eq!(results[0], Err("timeout".to_owned()));
        assert!(started.elapsed() >= Duration::from_millis(300));
        release.send(()).unwrap();
        assert_eq!(
            server.join().unwrap(),
            (1, 0),
            "sent once, on no other connection"
        );
    }

    #[test]
    fn no_node_listening_fails_each_request_as_connect() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = Target::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2)).unwrap();
        let results = drive(&t, 2, 3);
        assert!(
            results.iter().all(|r| r == &Err("connect".to_owned())),
            "{results:?}"
        );
    }
}
