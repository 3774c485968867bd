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
//! The address counted is the TCP peer's: `X-Forwarded-For` arrives only with the
//! request this module bounds. This file decides nothing about sessions.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
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
/// Over: `WELCOME` was sent, or the request got another answer.
const PHASE_DONE: u8 = 2;

/// One connection's opening, shared by its socket and its requests.
pub struct Opening {
    deadline: Instant,
    phase: AtomicU8,
    slot: Mutex<Option<Slot>>,
}

impl Opening {
    /// When the opening must be complete: accept + `timing.hello_timeout`.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The request was answered `101`: from here the WebSocket side enforces the
    /// deadline (it owes the client close code 4001), not the socket.
    pub fn upgraded(&self) {
        let _ = self.phase.compare_exchange(
            PHASE_HTTP,
            PHASE_UPGRADED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// The opening is over: the connection no longer counts against its address,
    /// and no deadline applies any more.
    pub fn finish(&self) {
        self.phase.store(PHASE_DONE, Ordering::SeqCst);
        drop(self.slot.lock().take());
    }

    fn socket_bounded(&self) -> bool {
        self.phase.load(Ordering::SeqCst) == PHASE_HTTP
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
/// HTTP request is still in progress. After that phase it is a plain `TcpStream`
/// (the opening and the timer are dropped at the next read or write).
pub struct OpeningIo {
    tcp: TcpStream,
    opening: Option<Arc<Opening>>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl OpeningIo {
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let Some(opening) = &self.opening else {
            return Ok(());
        };
        if !opening.socket_bounded() {
            self.opening = None;
            self.timer = None;
            return Ok(());
        }
        if let Some(timer) = &mut self.timer {
            if timer.as_mut().poll(cx).is_ready() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "HTTP request not complete within timing.hello_timeout",
                ));
            }
        }
        Ok(())
    }
}

impl AsyncRead for OpeningIo {
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
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_deadline(cx)?;
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

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
        };
        assert_eq!(o.count(a), 1);
        opening.upgraded();
        assert!(!opening.socket_bounded());
        opening.finish();
        opening.finish();
        assert_eq!(o.count(a), 0);
        drop(opening);
        assert_eq!(o.count(a), 0);
    }
}
