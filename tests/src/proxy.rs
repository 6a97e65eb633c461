//! A fault-injecting TCP proxy for one link (coordinator → one peer).
//!
//! Point a dg server at `Proxy::port` instead of the peer's port and every
//! connection to that node, the resolver's and cancel requests included,
//! goes through it. The link's mode changes at run time:
//!
//! - `Pass`: bytes flow.
//! - `Delay(d)`: a one-way latency: each chunk is forwarded `d` after it
//!   arrived, whatever else is in flight (a pipeline of messages sent
//!   together arrives together, `d` later, as on a long link).
//! - `BlackHole`: connections are accepted (new ones too) but nothing is
//!   forwarded either way; what was held flows once the link heals, as TCP
//!   retransmits after a partition.
//! - `Down`: every connection is closed, and new ones are accepted and
//!   closed at once (a reset link, a peer whose port answers with RST).
//!
//! Triggers switch the mode when traffic passes: after `n` more bytes, or
//! when a frontend message whose SQL text starts with a prefix passes
//! (simple-query `Q` and extended-protocol `P` messages carry SQL), with or
//! without delivering that message. `heal` is `set(Mode::Pass)`.
//!
//! Client → server traffic is forwarded one whole protocol message at a
//! time while a trigger is armed or the trace is on, so a trigger can act
//! exactly at a message boundary; otherwise what arrived together is
//! forwarded together.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Delay(Duration),
    BlackHole,
    Down,
}

#[derive(Clone, Debug)]
enum Trigger {
    None,
    /// Switch after this many more bytes (either direction).
    AfterBytes(u64),
    /// Switch when a message with SQL text starting with `prefix` passes;
    /// `deliver`: forward it first.
    AtMessage {
        prefix: String,
        deliver: bool,
    },
}

struct State {
    mode: Mode,
    trigger: Trigger,
    then: Mode,
    /// Bumped whenever the link goes `Down`: connections of an older epoch
    /// are finished.
    epoch: u64,
    /// Sockets of live connections (both ends), to close them on `Down`.
    conns: HashMap<u64, (TcpStream, TcpStream)>,
    next_id: u64,
    /// How many times a trigger fired.
    fired: u64,
    /// Bytes forwarded so far, both ways.
    bytes: u64,
    /// Frontend messages that carried SQL, as (SQL text, `bytes` when the
    /// message began to pass); kept only while `tracing`.
    trace: Vec<(String, u64)>,
    tracing: bool,
    /// Requests that passed: simple queries and extended-protocol syncs
    /// (each is answered by one ReadyForQuery).
    requests: u64,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    closing: AtomicBool,
}

/// A proxy listening on `addr` in front of one upstream address.
pub struct Proxy {
    pub port: u16,
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// What a pump may do with the next chunk.
enum Gate {
    Forward(Option<Duration>),
    Die,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the mode; `Down` closes every connection.
    fn switch(&self, st: &mut State, mode: Mode) {
        if mode == Mode::Down {
            st.epoch += 1;
            for (_, (a, b)) in st.conns.drain() {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
        st.mode = mode;
        st.trigger = Trigger::None;
        self.changed.notify_all();
    }

    /// Blocks while the link is black-holed; says whether a connection of
    /// `epoch` may forward now, and after what delay.
    fn gate(&self, epoch: u64) -> Gate {
        let mut st = self.lock();
        loop {
            if st.epoch != epoch || self.closing.load(Ordering::SeqCst) {
                return Gate::Die;
            }
            match &st.mode {
                Mode::Pass => return Gate::Forward(None),
                Mode::Delay(d) => return Gate::Forward(Some(*d)),
                Mode::Down => return Gate::Die,
                Mode::BlackHole => {
                    st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// How many of `len` bytes may pass before an `AfterBytes` trigger
    /// fires (all of them when none is armed), and fires it if reached.
    fn take_bytes(&self, len: usize) -> (usize, bool) {
        let mut st = self.lock();
        let (pass, fire) = match st.trigger {
            Trigger::AfterBytes(left) if (len as u64) >= left => (left as usize, true),
            Trigger::AfterBytes(left) => {
                st.trigger = Trigger::AfterBytes(left - len as u64);
                (len, false)
            }
            _ => (len, false),
        };
        st.bytes += pass as u64;
        (pass, fire)
    }

    /// Neither a trigger nor the trace needs frontend messages one by one.
    fn per_message_free(&self) -> bool {
        let st = self.lock();
        matches!(st.trigger, Trigger::None) && !st.tracing
    }

    /// Notes a frontend message that is about to pass.
    fn note(&self, msg: &[u8]) {
        let mut st = self.lock();
        if matches!(msg.first(), Some(b'Q' | b'S')) {
            st.requests += 1;
        }
        if !st.tracing {
            return;
        }
        if let Some(sql) = sql_text(msg) {
            let at = st.bytes;
            st.trace
                .push((String::from_utf8_lossy(sql).into_owned(), at));
        }
    }

    /// Whether the armed message trigger matches `msg`: Some(deliver).
    fn matches(&self, msg: &[u8]) -> Option<bool> {
        let st = self.lock();
        match &st.trigger {
            Trigger::AtMessage { prefix, deliver } => sql_text(msg)
                .is_some_and(|sql| sql.starts_with(prefix.as_bytes()))
                .then_some(*deliver),
            _ => None,
        }
    }

    /// Ends the current epoch if the armed trigger cuts the link.
    fn end_epoch_if_cut(&self) {
        let mut st = self.lock();
        if st.then == Mode::Down {
            st.epoch += 1;
        }
    }

    fn fire(&self) {
        let mut st = self.lock();
        st.fired += 1;
        let then = st.then.clone();
        self.switch(&mut st, then);
    }
}

/// The SQL text of a `Q` (query) or `P` (parse: statement name, then SQL)
/// message, without its NUL.
fn sql_text(msg: &[u8]) -> Option<&[u8]> {
    let body = msg.get(5..)?;
    let sql = match msg[0] {
        b'Q' => body,
        b'P' => &body[body.iter().position(|&b| b == 0)? + 1..],
        _ => return None,
    };
    Some(&sql[..sql.iter().position(|&b| b == 0).unwrap_or(sql.len())])
}

/// Frontend startup-phase requests after which another startup packet
/// follows (SSLRequest, GSSENCRequest).
const NEGOTIATION_CODES: [u32; 2] = [80877103, 80877104];

/// Splits complete frontend messages off the front of `buf`. Startup-phase
/// packets have no type byte; `startup` turns false after the real startup
/// packet (or a cancel request).
fn next_message(buf: &[u8], startup: &mut bool) -> Option<usize> {
    if *startup {
        let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
        if buf.len() < len.max(8) {
            return None;
        }
        let code = u32::from_be_bytes(buf[4..8].try_into().ok()?);
        if !NEGOTIATION_CODES.contains(&code) {
            *startup = false;
        }
        Some(len)
    } else {
        let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize + 1;
        (buf.len() >= len).then_some(len)
    }
}

impl Proxy {
    /// Starts a proxy in `Pass` mode in front of port `target` on loopback.
    pub fn start(target: u16) -> Proxy {
        Proxy::listen("127.0.0.1:0", ("127.0.0.1", target)).expect("start proxy")
    }

    /// Starts a proxy in `Pass` mode on `listen` in front of `target`.
    pub fn listen(
        listen: impl ToSocketAddrs,
        target: impl ToSocketAddrs,
    ) -> std::io::Result<Proxy> {
        let target = target.to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no upstream address")
        })?;
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let port = addr.port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Pass,
                trigger: Trigger::None,
                then: Mode::Pass,
                epoch: 0,
                conns: HashMap::new(),
                next_id: 0,
                fired: 0,
                bytes: 0,
                trace: Vec::new(),
                tracing: true,
                requests: 0,
            }),
            changed: Condvar::new(),
            closing: AtomicBool::new(false),
        });
        let sh = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if sh.closing.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(client) = client {
                    let sh = sh.clone();
                    thread::spawn(move || serve(sh, client, target));
                }
            }
        });
        Ok(Proxy { port, addr, shared })
    }

    /// Switches the link to `mode` now (and disarms any trigger).
    pub fn set(&self, mode: Mode) {
        let mut st = self.shared.lock();
        self.shared.switch(&mut st, mode);
    }

    /// Back to `Pass`.
    pub fn heal(&self) {
        self.set(Mode::Pass);
    }

    /// After `n` more bytes pass (either way), switch to `then`.
    pub fn after_bytes(&self, n: u64, then: Mode) {
        let mut st = self.shared.lock();
        st.trigger = Trigger::AfterBytes(n);
        st.then = then;
    }

    /// When a message whose SQL starts with `prefix` goes to the peer,
    /// forward it if `deliver`, then switch to `then`.
    pub fn at_message(&self, prefix: &str, deliver: bool, then: Mode) {
        let mut st = self.shared.lock();
        st.trigger = Trigger::AtMessage {
            prefix: prefix.to_string(),
            deliver,
        };
        st.then = then;
    }

    /// How many triggers fired so far.
    pub fn fired(&self) -> u64 {
        self.shared.lock().fired
    }

    /// Stops keeping the SQL of passing messages for `sent` (a long-lived
    /// proxy would otherwise grow without bound).
    pub fn stop_tracing(&self) {
        let mut st = self.shared.lock();
        st.tracing = false;
        st.trace = Vec::new();
    }

    /// Requests (simple queries, extended-protocol syncs) passed so far.
    pub fn requests(&self) -> u64 {
        self.shared.lock().requests
    }

    /// Bytes forwarded so far, both ways.
    pub fn bytes(&self) -> u64 {
        self.shared.lock().bytes
    }

    /// The first message whose SQL starts with `prefix` that began to pass
    /// after byte `since`: where (counted from `since`), and the length of
    /// its SQL.
    pub fn sent(&self, prefix: &str, since: u64) -> Option<(u64, usize)> {
        self.shared
            .lock()
            .trace
            .iter()
            .find(|(sql, at)| *at >= since && sql.starts_with(prefix))
            .map(|(sql, at)| (at - since, sql.len()))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.set(Mode::Down);
        // Wakes the accept loop so it sees `closing`.
        let _ = TcpStream::connect(self.addr);
    }
}

/// One client connection: connect upstream once the link lets us, then
/// pump both ways until either side closes or the link goes down.
fn serve(sh: Arc<Shared>, client: TcpStream, target: SocketAddr) {
    let epoch = sh.lock().epoch;
    let Gate::Forward(_) = sh.gate(epoch) else {
        return;
    };
    let Ok(server) = TcpStream::connect(target) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let id = {
        let mut st = sh.lock();
        if st.epoch != epoch {
            return;
        }
        let id = st.next_id;
        st.next_id += 1;
        let ends = (client.try_clone().unwrap(), server.try_clone().unwrap());
        st.conns.insert(id, ends);
        id
    };
    let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let sh2 = sh.clone();
    let down = thread::spawn(move || pump(&sh2, epoch, s2, c2, false));
    pump(&sh, epoch, client, server, true);
    let _ = down.join();
    sh.lock().conns.remove(&id);
}

/// Copies `from` → `to` through the link's gate; `frontend`: this is the
/// client → server direction, forwarded message by message.
///
/// A reader thread stamps each chunk with the time it arrived, so a delayed
/// link holds every chunk for the delay from its own arrival: chunks that
/// come while an earlier one waits are not held up behind it.
fn pump(sh: &Shared, epoch: u64, from: TcpStream, mut to: TcpStream, frontend: bool) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut reader = from.try_clone().unwrap();
    thread::spawn(move || {
        let mut chunk = [0u8; 16384];
        loop {
            match reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), chunk[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut buf = Vec::new();
    let mut startup = true;
    while let Ok((arrived, data)) = rx.recv() {
        buf.extend_from_slice(&data);
        let mut ready = Vec::new();
        if frontend {
            while let Some(len) = next_message(&buf, &mut startup) {
                ready.push(buf.drain(..len).collect::<Vec<u8>>());
            }
        } else {
            ready.push(std::mem::take(&mut buf));
        }
        // Messages that arrived together travel together, as on a real
        // link, unless a trigger or the trace must see each on its own:
        // one write per message would cost the proxy and the peer a
        // wake-up each, which the bench would charge to the protocol.
        let together = frontend && ready.len() > 1 && sh.per_message_free();
        if together {
            ready.iter().for_each(|m| sh.note(m));
            ready = vec![ready.concat()];
        }
        for msg in ready {
            if !forward(sh, epoch, &mut to, &msg, arrived, frontend && !together) {
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    // One side closed: pass the close on (after what was forwarded).
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// Forwards one message (or chunk) if the link allows; false when the
/// connection must end. `arrived`: when its last byte came in;
/// `frontend`: a whole client → server message.
fn forward(
    sh: &Shared,
    epoch: u64,
    to: &mut TcpStream,
    msg: &[u8],
    arrived: Instant,
    frontend: bool,
) -> bool {
    let delay = match sh.gate(epoch) {
        Gate::Die => return false,
        Gate::Forward(d) => d,
    };
    if let Some(d) = delay {
        thread::sleep((arrived + d).saturating_duration_since(Instant::now()));
    }
    if frontend {
        sh.note(msg);
    }
    if let Some(deliver) = sh.matches(msg) {
        if deliver {
            // A cut after the message must not let its answer through:
            // end the connection's epoch before the peer can see the
            // message, so the other direction's gate says Die to what it
            // answers (and not only once the switch below has run).
            sh.end_epoch_if_cut();
            if to.write_all(msg).is_err() {
                return false;
            }
        }
        sh.fire();
        // Not delivered: dropped if the link is now down, held if it is
        // black-holed (and sent once it heals).
        return deliver || forward(sh, epoch, to, msg, arrived, false);
    }
    let (pass, fire) = sh.take_bytes(msg.len());
    if to.write_all(&msg[..pass]).is_err() {
        return false;
    }
    if fire {
        sh.fire();
        return forward(sh, epoch, to, &msg[pass..], arrived, false);
    }
    true
}

impl Proxy {
    /// A proxy in front of peer `i` of `db`'s cluster, with `db`'s node
    /// `peer<i>` pointed at it: dg reaches that peer only through the proxy.
    pub fn for_peer(db: &crate::Db, i: usize) -> Proxy {
        let proxy = Proxy::start(db.cluster.peers[i - 1].port);
        db.coord()
            .batch_execute(&format!(
                "ALTER SERVER peer{i} OPTIONS (SET port '{}')",
                proxy.port
            ))
            .expect("point the node at its proxy");
        proxy
    }
}
