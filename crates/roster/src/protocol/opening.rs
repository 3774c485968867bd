//! The opening of a connection: everything from the TCP accept to `WELCOME` (the
//! HTTP request, the upgrade, `HELLO`). Two bounds hold it (SPEC §3 "Precise
//! rules"): a deadline, `timing.hello_timeout` counted from the accept, and a cap
//! on openings in progress per client address, `limits.max_openings_per_ip`.
//! Without them a socket that never sends its request, or sends it a byte at a
//! time, is held forever, and enough of them use up the process's file descriptors.
//!
//! [`OpeningListener`] accepts, closes at once a socket whose address is at its cap
//! (nothing read, nothing written), and wraps the others in [`OpeningIo`], which
//! fails reads and writes once the deadline has passed while the HTTP request is
//! still in progress. The shared [`Opening`] reaches the handlers as
//! `ConnectInfo<Peer>`: a `101` hands the deadline to the WebSocket side (which
//! closes 4001 when it passes) and `WELCOME` ends the opening; any other HTTP
//! answer ends it at once. The count is exact: a connection holds one [`Slot`],
//! released by whichever comes first, the end of the opening or the connection.
//!
//! A plain HTTP connection that stays open (keep-alive) is held to the same bound
//! between requests: once no request is in flight, its next request head must be
//! complete `hello_timeout` after the last answer was sent, or the socket fails.
//! Otherwise one quick request per socket followed by silence (or a dribble) would
//! hold sockets exactly as an unbounded opening did.
//!
//! The address counted is the TCP peer's: `X-Forwarded-For` arrives only with the
//! request this module bounds. This file decides nothing about sessions.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::metrics as m;

/// After an accept error other than a vanished peer (most likely out of file
/// descriptors), wait this long before accepting again, as hyper used to.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Openings in progress, per client address.
pub struct Openings {
    max_per_ip: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Openings {
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_ip,
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more opening from `ip`, or none at the cap.
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut map = self.per_ip.lock();
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        metrics::gauge!(m::OPENINGS).increment(1.0);
        Some(Slot {
            openings: self.clone(),
            ip,
        })
    }

    /// Openings in progress from `ip`.
    pub fn count(&self, ip: IpAddr) -> usize {
        self.per_ip.lock().get(&ip).copied().unwrap_or(0)
    }
}

/// One opening counted against its address; dropping it uncounts it.
struct Slot {
    openings: Arc<Openings>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.openings.per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
        metrics::gauge!(m::OPENINGS).decrement(1.0);
    }
}

/// The socket bounds the opening (the HTTP request is being read or answered).
const PHASE_HTTP: u8 = 0;
/// Answered `101`: the WebSocket side bounds the rest, with close code 4001.
const PHASE_UPGRADED: u8 = 1;
/// Over: `WELCOME` was sent.
const PHASE_DONE: u8 = 2;
/// Over for a plain HTTP connection: a request got an answer other than `101`.
/// The socket bounds the time between requests.
const PHASE_KEEP_ALIVE: u8 = 3;

/// One connection's opening, shared by its socket and its requests.
pub struct Opening {
    deadline: Instant,
    phase: AtomicU8,
    slot: Mutex<Option<Slot>>,
    /// `hello_timeout`: also the most a keep-alive connection may sit between requests.
    idle_limit: Duration,
    /// HTTP requests whose head was read and whose answer is not sent yet.
    in_flight: AtomicUsize,
    /// When the last answer was sent (its body dropped by hyper).
    idle_since: Mutex<Instant>,
}

impl Opening {
    /// When a WebSocket opening on this connection must be complete: accept +
    /// `timing.hello_timeout` for the connection's first request; for an upgrade
    /// asked later on a keep-alive connection, `hello_timeout` from now.
    pub fn deadline(&self) -> Instant {
        if self.phase.load(Ordering::SeqCst) == PHASE_KEEP_ALIVE {
            Instant::now() + self.idle_limit
        } else {
            self.deadline
        }
    }

    /// The request was answered `101`: from here the WebSocket side enforces the
    /// deadline (it owes the client close code 4001), not the socket.
    pub fn upgraded(&self) {
        let _ = self
            .phase
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                (p == PHASE_HTTP || p == PHASE_KEEP_ALIVE).then_some(PHASE_UPGRADED)
            });
    }

    /// The opening is over (`WELCOME` sent): the connection no longer counts
    /// against its address, and no deadline applies any more.
    pub fn finish(&self) {
        self.phase.store(PHASE_DONE, Ordering::SeqCst);
        drop(self.slot.lock().take());
    }

    /// A request got an answer other than `101`: the opening is over, and from now
    /// on the time between requests is bounded instead.
    pub fn answered(&self) {
        let _ = self.phase.compare_exchange(
            PHASE_HTTP,
            PHASE_KEEP_ALIVE,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        drop(self.slot.lock().take());
    }

    /// A request head was read; the returned guard is dropped once its answer has
    /// been sent (or abandoned). No bound applies while a request is in flight.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Whether the socket's deadline applies right now, and which.
    fn socket_deadline(&self) -> Bound {
        let idle = self.in_flight.load(Ordering::SeqCst) == 0;
        match self.phase.load(Ordering::SeqCst) {
            PHASE_HTTP if idle => Bound::Until(self.deadline),
            PHASE_KEEP_ALIVE if idle => Bound::Until(*self.idle_since.lock() + self.idle_limit),
            PHASE_HTTP | PHASE_KEEP_ALIVE => Bound::NotNow,
            _ => Bound::Never,
        }
    }
}

enum Bound {
    Until(Instant),
    /// A request is being answered.
    NotNow,
    /// The WebSocket side has the connection now.
    Never,
}

/// One HTTP request in flight on a connection (see [`Opening::request`]).
pub struct InFlight(Arc<Opening>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.idle_since.lock() = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a handler knows about its connection (`ConnectInfo<Peer>`).
#[derive(Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Always set for connections from [`OpeningListener`].
    pub opening: Option<Arc<Opening>>,
}

impl Connected<IncomingStream<'_, OpeningListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, OpeningListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            opening: stream.io().opening.clone(),
        }
    }
}

/// The TCP listener of the server: `TCP_NODELAY` on every socket, the per-address
/// cap, and the deadline.
pub struct OpeningListener {
    tcp: TcpListener,
    openings: Arc<Openings>,
    hello_timeout: Duration,
}

impl OpeningListener {
    pub fn new(tcp: TcpListener, openings: Arc<Openings>, hello_timeout: Duration) -> Self {
        Self {
            tcp,
            openings,
            hello_timeout,
        }
    }
}

impl Listener for OpeningListener {
    type Io = OpeningIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (OpeningIo, SocketAddr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) {
                        tracing::error!("accept error: {e}");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            };
            let deadline = Instant::now() + self.hello_timeout;
            let Some(slot) = self.openings.enter(addr.ip()) else {
                // Closed without reading: under a flood, refusing must cost nothing.
                metrics::counter!(m::OPENINGS_REFUSED).increment(1);
                drop(tcp);
                continue;
            };
            // Presence frames are small: never let Nagle hold them for a delayed ACK.
            let _ = tcp.set_nodelay(true);
            let opening = Arc::new(Opening {
                deadline,
                phase: AtomicU8::new(PHASE_HTTP),
                slot: Mutex::new(Some(slot)),
                idle_limit: self.hello_timeout,
                in_flight: AtomicUsize::new(0),
                idle_since: Mutex::new(deadline),
            });
            let io = OpeningIo {
                tcp,
                opening: Some(opening),
                timer: Some(Box::pin(tokio::time::sleep_until(deadline))),
            };
            return (io, addr);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// An accepted socket that fails once its opening's deadline passes while the
/// HTTP request is still in progress, or (keep-alive) once the next request has
/// not arrived in time. After an upgrade it is a plain `TcpStream` (the opening and
/// the timer are dropped at the next read or write).
pub struct OpeningIo {
    // Dropped in this order: the opening's slot is released before the socket
    // closes, so a peer that sees the close can open again at once.
    opening: Option<Arc<Opening>>,
    timer: Option<Pin<Box<Sleep>>>,
    tcp: TcpStream,
}

impl OpeningIo {
    /// Every read and write of an open connection passes here, for as long as the
    /// connection lives: once the opening is over it is one test, inlined. (As a
    /// call per read and per write it cost about 1 % of a fan-out's instructions;
    /// docs/BENCHMARKS.md, "Issue 11: before and after".)
    #[inline(always)]
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.opening.is_none() {
            return Ok(());
        }
        self.check_opening_deadline(cx)
    }

    #[cold]
    #[inline(never)]
    fn check_opening_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(opening) = &self.opening else {
            return Ok(());
        };
        let deadline = match opening.socket_deadline() {
            Bound::Until(d) => d,
            Bound::NotNow => return Ok(()),
            Bound::Never => {
                self.opening = None;
                self.timer = None;
                return Ok(());
            }
        };
        if let Some(timer) = &mut self.timer {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_ready() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete HTTP request within timing.hello_timeout",
                ));
            }
        }
        Ok(())
    }
}

impl AsyncRead for OpeningIo {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for OpeningIo {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_counted_per_address_and_released_on_drop() {
        let o = Openings::new(2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let s1 = o.enter(a).unwrap();
        let s2 = o.enter(a).unwrap();
        assert!(o.enter(a).is_none(), "third from the same address");
        let s3 = o.enter(b).unwrap();
        assert_eq!((o.count(a), o.count(b)), (2, 1));
        drop(s1);
        assert_eq!(o.count(a), 1);
        let s4 = o.enter(a).unwrap();
        drop((s2, s3, s4));
        assert_eq!((o.count(a), o.count(b)), (0, 0));
        assert!(o.per_ip.lock().is_empty(), "no entry left behind");
    }

    #[test]
    fn finish_releases_the_slot_once() {
        let o = Openings::new(1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let opening = Opening {
            deadline: Instant::now(),
            phase: AtomicU8::new(PHASE_HTTP),
            slot: Mutex::new(o.enter(a)),
            idle_limit: Duration::from_secs(1),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        };
        assert_eq!(o.count(a), 1);
        opening.upgraded();
        assert!(matches!(opening.socket_deadline(), Bound::Never));
        let keep_alive = Opening {
            deadline: Instant::now(),
            phase: AtomicU8::new(PHASE_KEEP_ALIVE),
            slot: Mutex::new(None),
            idle_limit: Duration::from_secs(1),
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        };
        assert!(
            keep_alive.deadline() > Instant::now(),
            "a later upgrade gets its own time"
        );
        keep_alive.upgraded();
        assert!(matches!(keep_alive.socket_deadline(), Bound::Never));
        opening.finish();
        opening.finish();
        assert_eq!(o.count(a), 0);
        drop(opening);
        assert_eq!(o.count(a), 0);
    }
}
