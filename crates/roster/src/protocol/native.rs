//! The native WebSocket protocol (`GET /ws`, SPEC §3) over one connection: the
//! opening (`HELLO` by the opening's deadline, `hello_timeout` after the TCP accept;
//! `WELCOME` ends the opening, see `opening.rs`), then one loop that reads client frames,
//! writes queued server frames, and obeys a kill from the node. All decisions are
//! the node's; this file only translates.

use std::sync::atomic::AtomicU16;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::messages::{self, ClientMessage, Mode, StatusValue};
use super::opening::Opening;
use super::socket::{Incoming, ReadError, Socket};
use crate::auth::{Authenticator, Identity};
use crate::core::error::{CoreError, ErrorCode};
use crate::core::types::Status;
use crate::core::types::SubMode;
use crate::frame::Frame;
use crate::metrics as m;
use crate::node::hub::{self, close, ConnLink, Outbound, SessionHandle};
use crate::node::{HelloInfo, Node};

/// What the HTTP upgrade knew about the connection.
pub struct ConnContext {
    /// The connection's opening: ended at `WELCOME` (`protocol/opening.rs`).
    pub opening: Option<Arc<Opening>>,
    /// When the opening must be complete (accept + `hello_timeout`).
    pub deadline: Instant,
    pub pre_token: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// Per-connection input limits: a token bucket for messages and a per-minute
/// error budget. Plain fields: only the connection's own task touches them.
pub(crate) struct Limits {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
    errors: u32,
    errors_since: Instant,
    max_errors: u32,
}

impl Limits {
    pub(crate) fn new(rate: u32, burst: u32, max_errors: u32) -> Self {
        let now = Instant::now();
        Self {
            tokens: burst as f64,
            rate: rate as f64,
            burst: burst as f64,
            last: now,
            errors: 0,
            errors_since: now,
            max_errors,
        }
    }
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + (now - self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
    /// Counts an error; true when the budget is exceeded.
    pub(crate) fn error(&mut self) -> bool {
        let now = Instant::now();
        if now - self.errors_since >= Duration::from_secs(60) {
            self.errors = 0;
            self.errors_since = now;
        }
        self.errors += 1;
        self.errors > self.max_errors
    }
}

/// Counts a connection task in (gauge and hub) and out, however it ends.
pub(crate) struct ConnectionGauge(Arc<Node>);
impl ConnectionGauge {
    pub(crate) fn new(node: &Arc<Node>) -> Self {
        node.hub
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        Self(node.clone())
    }
}
impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.0
            .hub
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
    }
}

enum Flow {
    Continue,
    Close(u16),
}

fn error_frame(e: &CoreError, reply_ref: Option<&Value>) -> Frame {
    metrics::counter!(m::ERRORS, "code" => e.code.as_str()).increment(1);
    Frame::encode(
        "ERROR",
        &json!({"code": e.code.as_str(), "message": e.message}),
        reply_ref,
    )
}

async fn send_frame(ws: &mut Socket, f: Frame) -> bool {
    ws.send_text(&f.0).await
}

/// Writes every frame already queued (not waiting for more).
async fn drain(ws: &mut Socket, rx: &mut mpsc::Receiver<Outbound>) {
    while let Ok(out) = rx.try_recv() {
        if let Outbound::Frame(f) = out {
            if !send_frame(ws, f).await {
                return;
            }
        }
    }
}

pub async fn serve(
    mut ws: Socket,
    mut ctx: ConnContext,
    node: Arc<Node>,
    auth: Arc<Authenticator>,
) {
    let cfg = node.config.clone();
    let mut limits = Limits::new(
        cfg.limits.messages_per_second,
        cfg.limits.messages_burst,
        cfg.limits.errors_per_minute,
    );
    // Cold paths are boxed so the idle connection's future stays small.
    let Some((identity, hello, hello_ref)) =
        Box::pin(opening(&mut ws, &ctx, &auth, &mut limits)).await
    else {
        return;
    };
    // A stopping node opens no session: the client reconnects to another node (or
    // to this one restarted) and resumes there.
    if node.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        ws.close(close::GOING_AWAY).await;
        return;
    }

    let (tx, mut rx) = mpsc::channel(cfg.limits.send_queue);
    let kill = CancellationToken::new();
    let link = ConnLink {
        id: node.next_conn_id(),
        wire: &super::render::NATIVE,
        tx,
        kill: kill.clone(),
        close_code: Arc::new(AtomicU16::new(0)),
    };
    let info = HelloInfo {
        device: hello.device,
        os: hello.os,
        app_version: hello.app_version,
        client_id: hello.client_id,
        ip: ctx.ip,
        user_agent: ctx.user_agent,
    };
    let welcome = Box::pin(node.open_session(identity, info, link.clone())).await;
    let _connected = ConnectionGauge::new(&node);
    let Some(session) = node.hub.get(&welcome.session_id) else {
        return;
    };
    // The opening ends before WELCOME leaves: a client that has seen WELCOME
    // no longer counts against its address's `limits.max_openings_per_ip`.
    if let Some(opening) = ctx.opening.take() {
        opening.finish();
    }
    metrics::counter!(m::MESSAGES_OUT, "type" => "WELCOME").increment(1);
    let welcome_frame = Frame::encode("WELCOME", &welcome, hello_ref.as_ref());
    if !Box::pin(send_frame(&mut ws, welcome_frame)).await {
        node.connection_lost(&session, link.id);
        return;
    }
    tracing::debug!(session = %welcome.session_id, user = %welcome.user_id, tenant = %welcome.tenant_id, resumed = welcome.resumed, "session open");
    drop(welcome);

    let mut said_bye = false;
    loop {
        tokio::select! {
            biased;
            _ = kill.cancelled() => {
                let code = link.close_code.load(std::sync::atomic::Ordering::SeqCst);
                let code = if code == 0 { close::GOING_AWAY } else { code };
                // What was queued before the kill (the leaves of a shutdown, say) goes
                // out first, within a bound; a slow consumer's queue is dropped.
                Box::pin(async {
                    if code != close::SLOW_CONSUMER {
                        let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut ws, &mut rx)).await;
                    }
                    ws.close(code).await;
                })
                .await;
                break;
            }
            out = rx.recv() => {
                let sent = match out {
                    // Boxed: the write's state is only needed while writing, and
                    // the idle future is what every connection pays for.
                    Some(Outbound::Frame(f)) => tokio::select! {
                        ok = Box::pin(ws.send_text(&f.0)) => ok,
                        _ = kill.cancelled() => continue,
                    },
                    Some(Outbound::Ping(stamp)) => Box::pin(ws.ping(stamp.to_be_bytes().to_vec())).await,
                    None => break,
                };
                if !sent {
                    break;
                }
            }
            incoming = ws.recv() => {
                let msg = match incoming {
                    Some(Ok(msg)) => msg,
                    Some(Err(ReadError(code))) => {
                        if let Some(code) = code {
                            Box::pin(ws.close(code)).await;
                        }
                        break;
                    }
                    None => break,
                };
                node.touch(&session);
                match msg {
                    Incoming::Text(text) => {
                        match Box::pin(on_text(&node, &session, &mut limits, text.as_str())).await {
                            Flow::Continue => {}
                            Flow::Close(code) => {
                                said_bye = code == close::NORMAL;
                                // What was queued before the decision goes out first.
                                Box::pin(async {
                                    let _ = tokio::time::timeout(Duration::from_secs(1), drain(&mut ws, &mut rx)).await;
                                    ws.close(code).await;
                                })
                                .await;
                                break;
                            }
                        }
                    }
                    Incoming::Binary(_) => {
                        Box::pin(ws.close(close::UNSUPPORTED)).await;
                        break;
                    }
                    Incoming::Pong(payload) => node.pong(&session, &payload),
                    Incoming::Ping => {}
                    Incoming::Close => {
                        Box::pin(ws.answer_close()).await;
                        break;
                    }
                }
            }
        }
    }
    if !said_bye {
        node.connection_lost(&session, link.id);
    }
}

/// Until `WELCOME` only `HELLO` is accepted; the whole opening, from the TCP
/// accept on, is bounded by `hello_timeout` (`ctx.deadline`).
async fn opening(
    ws: &mut Socket,
    ctx: &ConnContext,
    auth: &Authenticator,
    limits: &mut Limits,
) -> Option<(Identity, messages::Hello, Option<Value>)> {
    let deadline = ctx.deadline;
    loop {
        let next = match tokio::time::timeout_at(deadline, ws.recv()).await {
            Err(_) => {
                ws.close(close::AUTH).await;
                return None;
            }
            Ok(None) => return None,
            Ok(Some(Err(ReadError(code)))) => {
                if let Some(code) = code {
                    ws.close(code).await;
                }
                return None;
            }
            Ok(Some(Ok(m))) => m,
        };
        let text = match next {
            Incoming::Text(t) => t,
            Incoming::Binary(_) => {
                ws.close(close::UNSUPPORTED).await;
                return None;
            }
            Incoming::Close => {
                ws.answer_close().await;
                return None;
            }
            _ => continue,
        };
        let parsed = messages::parse(text.as_str());
        let err = match parsed.message {
            Ok(ClientMessage::Hello(hello)) => {
                metrics::counter!(m::MESSAGES_IN, "type" => "HELLO").increment(1);
                let token = hello.token.clone().or_else(|| ctx.pre_token.clone());
                let result = match token {
                    None => Err(
                        "no token: send one in ?token=, Authorization: Bearer, or HELLO.token"
                            .to_string(),
                    ),
                    Some(t) => auth.verify(&t).map_err(|e| e.0),
                };
                match result {
                    Ok(id) => return Some((id, hello, parsed.reply_ref)),
                    Err(msg) => {
                        let e = CoreError::new(ErrorCode::AuthFailed, msg);
                        send_frame(ws, error_frame(&e, parsed.reply_ref.as_ref())).await;
                        ws.close(close::AUTH).await;
                        return None;
                    }
                }
            }
            Ok(other) => CoreError::new(
                ErrorCode::NotAuthenticated,
                format!("{} before WELCOME: send HELLO first", other.type_name()),
            ),
            Err(e) => e,
        };
        send_frame(ws, error_frame(&err, parsed.reply_ref.as_ref())).await;
        if limits.error() {
            let e = CoreError::new(ErrorCode::TooManyErrors, "too many errors");
            send_frame(ws, error_frame(&e, None)).await;
            ws.close(close::TOO_MANY_ERRORS).await;
            return None;
        }
    }
}

async fn on_text(
    node: &Arc<Node>,
    s: &Arc<SessionHandle>,
    limits: &mut Limits,
    text: &str,
) -> Flow {
    let parsed = messages::parse(text);
    let r = parsed.reply_ref.as_ref();
    let result: Result<(), CoreError> = if !limits.take() {
        Err(CoreError::new(
            ErrorCode::RateLimited,
            "too many messages; this one was dropped",
        ))
    } else {
        match parsed.message {
            Ok(msg) => {
                metrics::counter!(m::MESSAGES_IN, "type" => msg.type_name()).increment(1);
                match handle(node, s, msg, r).await {
                    Ok(flow) => return flow,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    };
    let Err(e) = result else {
        return Flow::Continue;
    };
    hub::send_to(s, &error_frame(&e, r));
    // A dropped message (rate_limited) is the limit working, not a client error.
    if e.code != ErrorCode::RateLimited && limits.error() {
        let e = CoreError::new(ErrorCode::TooManyErrors, "too many errors: closing");
        hub::send_to(s, &error_frame(&e, None));
        return Flow::Close(close::TOO_MANY_ERRORS);
    }
    Flow::Continue
}

/// Replies and errors go through the session's send queue like every other
/// message, so they stay in order with the `PRESENCE`, diffs and events before them.
fn reply(s: &SessionHandle, ty: &'static str, body: Value, r: Option<&Value>) {
    metrics::counter!(m::MESSAGES_OUT, "type" => ty).increment(1);
    hub::send_to(s, &Frame::encode(ty, &body, r));
}

async fn handle(
    node: &Arc<Node>,
    s: &Arc<SessionHandle>,
    msg: ClientMessage,
    r: Option<&Value>,
) -> Result<Flow, CoreError> {
    match msg {
        ClientMessage::Hello(_) => {
            return Err(CoreError::new(
                ErrorCode::BadRequest,
                "HELLO was already accepted on this connection",
            ));
        }
        ClientMessage::Sub(sub) => {
            let key = sub.addr.key()?;
            let mode = if sub.mode == Mode::Count {
                SubMode::Count
            } else {
                SubMode::List
            };
            node.sub(s, key, sub.state, mode, r).await?;
        }
        ClientMessage::Unsub(addr) => {
            let key = addr.key()?;
            node.unsub(s, key.clone()).await?;
            reply(s, "UNSUB_ACK", json!({"room": key}), r);
        }
        ClientMessage::Hb(hb) => {
            let latency = hb
                .latency_ms
                .filter(|l| l.is_finite() && *l >= 0.0)
                .map(|l| l as u32);
            node.heartbeat(s, hb.active.unwrap_or(true), latency).await;
            let server_time = crate::clock::iso(node.clock.wall_now());
            reply(
                s,
                "HB_ACK",
                json!({"t": hb.t, "serverTime": server_time}),
                r,
            );
        }
        ClientMessage::State(st) => {
            let key = st.addr.key()?;
            node.set_state(s, key, st.state).await?;
        }
        ClientMessage::Status(st) => {
            let status = match st.status {
                StatusValue::Online => Status::Online,
                StatusValue::Away => Status::Away,
            };
            node.set_status(s, status).await;
        }
        ClientMessage::Lock(l) => {
            let key = l.addr.key()?;
            check_field(&l.field)?;
            node.lock(s, key, &l.field, r).await?;
        }
        ClientMessage::Unlock(l) => {
            let key = l.addr.key()?;
            check_field(&l.field)?;
            node.unlock(s, key, &l.field, r).await?;
        }
        ClientMessage::Watch(w) => {
            let users = w.user_ids(node.config.limits.max_watch)?;
            node.watch(s, users, r).await?;
        }
        ClientMessage::Unwatch(w) => {
            let users = w.user_ids(usize::MAX)?;
            node.unwatch(s, users);
        }
        ClientMessage::Emit(e) => {
            let key = e.addr.key()?;
            node.emit_event(s, key, e.event, e.data).await?;
        }
        ClientMessage::Bye => {
            node.end_session(&s.meta.id, crate::core::types::LeaveReason::Left)
                .await;
            return Ok(Flow::Close(close::NORMAL));
        }
    }
    Ok(Flow::Continue)
}

pub(crate) fn check_field(field: &str) -> Result<(), CoreError> {
    if field.is_empty() || field.len() > 200 || field.chars().any(char::is_control) {
        return Err(CoreError::new(
            ErrorCode::BadRequest,
            "field `field`: 1-200 characters, no control characters",
        ));
    }
    Ok(())
}
