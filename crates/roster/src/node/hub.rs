//! The node's live sessions and their connections: the [`Outbox`] the engine
//! delivers through. Sharded (`DashMap`), and a send never waits: a full queue
//! closes the connection as a slow consumer instead of growing.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Identity;
use crate::core::session::SessionMeta;
use crate::core::types::Status;
use crate::engine::{Outbox, Outgoing};
use crate::frame::Frame;
use crate::ids::{RoomId, SessionId, UserId, UserRef};
use crate::metrics as m;

/// What a connection task is asked to write.
#[derive(Debug)]
pub enum Outbound {
    Frame(Frame),
    /// A WebSocket ping carrying the send time (clock millis) for RTT.
    Ping(u64),
}

/// Close code used when a connection is killed from outside its task.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED: u16 = 1003;
    pub const BAD_DATA: u16 = 1007;
    pub const TOO_BIG: u16 = 1009;
    pub const AUTH: u16 = 4001;
    pub const TIMEOUT: u16 = 4008;
    pub const SLOW_CONSUMER: u16 = 4009;
    pub const TOO_MANY_ERRORS: u16 = 4010;
    pub const KICKED: u16 = 4011;
    pub const REPLACED: u16 = 4012;

    pub fn reason(code: u16) -> &'static str {
        match code {
            NORMAL => "bye",
            GOING_AWAY => "server shutting down",
            UNSUPPORTED => "binary frames are not supported",
            BAD_DATA => "invalid UTF-8",
            TOO_BIG => "frame too large",
            AUTH => "auth_failed",
            TIMEOUT => "session timeout",
            SLOW_CONSUMER => "slow_consumer",
            TOO_MANY_ERRORS => "too_many_errors",
            KICKED => "kicked",
            REPLACED => "replaced",
            _ => "",
        }
    }
}

/// One WebSocket connection's sending side, as seen by the rest of the node.
#[derive(Clone)]
pub struct ConnLink {
    pub id: u64,
    pub tx: mpsc::Sender<Outbound>,
    pub kill: CancellationToken,
    pub close_code: Arc<AtomicU16>,
}

impl ConnLink {
    /// Asks the connection task to close with `code` (the first code asked wins).
    pub fn close(&self, code: u16) {
        let _ = self
            .close_code
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.kill.cancel();
    }
}

pub struct SessionHandle {
    pub meta: Arc<SessionMeta>,
    pub user_ref: UserRef,
    pub identity: Identity,
    pub conn: Mutex<Option<ConnLink>>,
    pub rooms: Mutex<BTreeSet<RoomId>>,
    pub watching: Mutex<BTreeSet<UserId>>,
    /// Clock millis of the last frame of any kind (liveness).
    pub last_frame: AtomicU64,
    /// Clock millis of the last heartbeat that reported user activity.
    pub last_active: AtomicU64,
    pub inactive: AtomicBool,
    /// 0 = none, else the `Status` (+1) the client set with `STATUS`.
    pub explicit_status: AtomicU8,
    pub status: AtomicU8,
    pub grace_gen: AtomicU64,
    /// Clock millis when the connection dropped (0 = connected).
    pub detached_at: AtomicU64,
    pub ended: AtomicBool,
    /// Every room this session joined (for its history row).
    pub visited: Mutex<BTreeSet<String>>,
}

impl SessionHandle {
    pub fn status(&self) -> Status {
        Status::from_u8(self.status.load(Ordering::Relaxed))
    }
    pub fn link(&self) -> Option<ConnLink> {
        self.conn.lock().clone()
    }
    pub fn is_connected(&self) -> bool {
        self.conn.lock().is_some()
    }
}

#[derive(Default)]
pub struct Hub {
    pub sessions: DashMap<SessionId, Arc<SessionHandle>>,
    /// Connection tasks still running (they count themselves in and out).
    pub connections: std::sync::atomic::AtomicUsize,
}

impl Hub {
    pub fn get(&self, id: &SessionId) -> Option<Arc<SessionHandle>> {
        self.sessions.get(id).map(|s| s.value().clone())
    }

    /// Queues a frame for one session; never waits.
    pub fn send(&self, id: &SessionId, frame: &Frame) -> bool {
        match self.get(id) {
            Some(s) => send_to(&s, frame),
            None => false,
        }
    }
}

pub fn send_to(s: &SessionHandle, frame: &Frame) -> bool {
    let Some(link) = s.link() else { return false };
    match link.tx.try_send(Outbound::Frame(frame.clone())) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!(m::SEND_QUEUE_DROPS).increment(1);
            link.close(close::SLOW_CONSUMER);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

impl Outbox for Hub {
    fn deliver(&self, to: &mut dyn Iterator<Item = &SessionId>, msg: Outgoing<'_>) {
        let Some((ty, frame)) = crate::protocol::render::outgoing(msg) else {
            return;
        };
        if ty == "PRESENCE_DIFF" {
            metrics::counter!(m::DIFFS_SENT).increment(1);
        }
        let mut n = 0u64;
        for id in to {
            if self.send(id, &frame) {
                n += 1;
            }
        }
        metrics::counter!(m::MESSAGES_OUT, "type" => ty).increment(n);
    }
}
