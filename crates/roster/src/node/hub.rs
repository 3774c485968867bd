//! The node's live sessions and their connections: the [`Outbox`] the engine
//! delivers through. Sharded (`DashMap`), and a send never waits: a full queue
//! closes the connection as a slow consumer instead of growing.
//!
//! Each connection speaks one protocol, its [`Wire`]: the node hands it data
//! (what the engine delivers, the node's replies) and the wire renders frames.
//! A delivery renders once per wire among its recipients, whatever their number.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::auth::Identity;
use crate::core::outgoing::Outgoing;
use crate::core::room::LockOwnerView;
use crate::core::session::SessionMeta;
use crate::core::types::Status;
use crate::engine::Outbox;
use crate::frame::Frame;
use crate::ids::{RoomId, RoomKey, SessionId, UserId, UserRef};
use crate::metrics as m;

/// What the node says to one session on its own, as data (the engine's room
/// deliveries are [`Outgoing`]).
#[derive(Clone, Copy)]
pub enum Reply<'a> {
    /// The answer to a lock request: `owner` holds the field now (the asker on
    /// success).
    LockAck {
        room: &'a RoomKey,
        field: &'a str,
        success: bool,
        owner: &'a LockOwnerView,
        reply_ref: Option<&'a Value>,
    },
    UnlockAck {
        room: &'a RoomKey,
        field: &'a str,
        success: bool,
        reply_ref: Option<&'a Value>,
    },
    /// The watched users' status now (the answer to a watch).
    StatusSnapshot {
        users: &'a BTreeMap<UserId, super::UserStatusView>,
        reply_ref: Option<&'a Value>,
    },
    /// A watched user's status changed.
    Status {
        user: &'a UserId,
        view: &'a super::UserStatusView,
    },
}

/// A protocol as the node sees it: it renders data into frames. The native
/// protocol's is `protocol::render::NATIVE`; another protocol is another
/// implementation, in a file of its own under `protocol/`.
pub trait Wire: Send + Sync + 'static {
    /// The message type (a metrics label) and the frame of an engine delivery;
    /// `None` if this protocol has nothing to say about it.
    fn outgoing(&self, msg: Outgoing<'_>) -> Option<(&'static str, Frame)>;
    fn reply(&self, reply: Reply<'_>) -> Option<(&'static str, Frame)>;
}

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
    /// The protocol the connection speaks.
    pub wire: &'static dyn Wire,
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
    send_on(&link, frame)
}

/// Renders `reply` in the session's protocol and queues it.
pub fn reply_to(s: &SessionHandle, reply: Reply<'_>) -> bool {
    let Some(link) = s.link() else { return false };
    let Some((ty, frame)) = link.wire.reply(reply) else {
        return false;
    };
    let sent = send_on(&link, &frame);
    metrics::counter!(m::MESSAGES_OUT, "type" => ty).increment(sent as u64);
    sent
}

fn send_on(link: &ConnLink, frame: &Frame) -> bool {
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

/// This process's part of every socket id: a connection's socket id is
/// `<process>.<link id>` (digits only, as Pusher's server libraries check).
fn process_part() -> u32 {
    static PART: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *PART.get_or_init(|| rand::random::<u32>() % 1_000_000_000)
}

/// The socket id of a connection of this process (Pusher's `socket_id`).
pub fn socket_id(link_id: u64) -> String {
    format!("{}.{link_id}", process_part())
}

/// The link id of a socket id, if the connection is (or was) of this process.
pub fn local_link_of_socket(socket_id: &str) -> Option<u64> {
    let (process, link) = socket_id.split_once('.')?;
    (process.parse::<u32>().ok()? == process_part())
        .then(|| link.parse().ok())
        .flatten()
}

/// One wire's rendering of a delivery, and how many it reached.
struct Rendered {
    wire: &'static dyn Wire,
    frame: Option<(&'static str, Frame)>,
    sent: u64,
}

impl Outbox for Hub {
    fn deliver(&self, to: &mut dyn Iterator<Item = &SessionId>, msg: Outgoing<'_>) {
        // Usually one wire: a short list beats a map.
        let mut rendered: Vec<Rendered> = Vec::with_capacity(1);
        // A room event goes to the others, not back to its sender (nor to
        // the connection the back end excluded).
        let (sender, except) = match msg {
            Outgoing::Event(crate::core::transition::Transition::RoomEvent {
                from,
                except_socket,
                ..
            }) => (
                from.as_ref().map(|f| &f.session),
                except_socket.as_deref().and_then(local_link_of_socket),
            ),
            _ => (None, None),
        };
        for id in to {
            if sender == Some(id) {
                continue;
            }
            // Borrowed, not cloned: the session's map entry and its connection
            // are held only for a `try_send`, which never waits.
            let Some(session) = self.sessions.get(id) else {
                continue;
            };
            let conn = session.conn.lock();
            let Some(link) = conn.as_ref() else {
                continue;
            };
            if except == Some(link.id) {
                continue;
            }
            let i = match rendered
                .iter()
                .position(|r| std::ptr::addr_eq(r.wire, link.wire))
            {
                Some(i) => i,
                None => {
                    rendered.push(Rendered {
                        wire: link.wire,
                        frame: link.wire.outgoing(msg),
                        sent: 0,
                    });
                    rendered.len() - 1
                }
            };
            let r = &mut rendered[i];
            if let Some((_, frame)) = &r.frame {
                r.sent += send_on(link, frame) as u64;
            }
        }
        for r in rendered {
            if let Some((ty, _)) = r.frame {
                if ty == "PRESENCE_DIFF" {
                    metrics::counter!(m::DIFFS_SENT).increment(1);
                }
                metrics::counter!(m::MESSAGES_OUT, "type" => ty).increment(r.sent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;
    use std::sync::atomic::AtomicUsize;

    /// A protocol that renders a diff as its own name and counts its renders.
    struct Counting(&'static str, AtomicUsize);

    impl Wire for Counting {
        fn outgoing(&self, _msg: Outgoing<'_>) -> Option<(&'static str, Frame)> {
            self.1.fetch_add(1, Ordering::SeqCst);
            Some((self.0, Frame::encode(self.0, &serde_json::json!({}), None)))
        }
        fn reply(&self, _reply: Reply<'_>) -> Option<(&'static str, Frame)> {
            None
        }
    }

    static A: Counting = Counting("A", AtomicUsize::new(0));
    static B: Counting = Counting("B", AtomicUsize::new(0));

    fn session(hub: &Hub, wire: &'static dyn Wire) -> (SessionId, mpsc::Receiver<Outbound>) {
        let id = SessionId::new_random();
        let (tenant, user) = (TenantId::parse("t").unwrap(), UserId::parse("u").unwrap());
        let (tx, rx) = mpsc::channel(4);
        let link = ConnLink {
            id: 1,
            wire,
            tx,
            kill: CancellationToken::new(),
            close_code: Arc::new(AtomicU16::new(0)),
        };
        let meta = SessionMeta::bare(
            id.clone(),
            tenant.clone(),
            user.clone(),
            Arc::new(AtomicU8::new(0)),
        );
        let handle = SessionHandle {
            meta: Arc::new(meta),
            user_ref: UserRef {
                tenant: tenant.clone(),
                user: user.clone(),
            },
            identity: Identity {
                tenant,
                user,
                roles: vec![],
                name: None,
                info: None,
            },
            conn: Mutex::new(Some(link)),
            rooms: Mutex::default(),
            watching: Mutex::default(),
            last_frame: AtomicU64::new(0),
            last_active: AtomicU64::new(0),
            inactive: AtomicBool::new(false),
            explicit_status: AtomicU8::new(0),
            status: AtomicU8::new(0),
            grace_gen: AtomicU64::new(0),
            detached_at: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            visited: Mutex::default(),
        };
        hub.sessions.insert(id.clone(), Arc::new(handle));
        (id, rx)
    }

    #[test]
    fn a_delivery_is_rendered_once_per_protocol_among_its_recipients() {
        let hub = Hub::default();
        let mut to = vec![];
        let mut rxs = vec![];
        for wire in [&A as &dyn Wire, &B, &A, &A, &B] {
            let (id, rx) = session(&hub, wire);
            to.push(id);
            rxs.push((wire, rx));
        }
        hub.deliver(
            &mut to.iter(),
            Outgoing::PresenceCount {
                room: "r",
                count: 5,
                seq: 1,
                reply_ref: None,
            },
        );
        assert_eq!(A.1.load(Ordering::SeqCst), 1);
        assert_eq!(B.1.load(Ordering::SeqCst), 1);
        for (wire, mut rx) in rxs {
            let Ok(Outbound::Frame(f)) = rx.try_recv() else {
                panic!("every recipient gets a frame");
            };
            let name = if std::ptr::addr_eq(wire, &A as &dyn Wire) {
                "A"
            } else {
                "B"
            };
            assert!(
                f.as_str().contains(name),
                "{} in {name}'s protocol",
                f.as_str()
            );
        }
    }
}
