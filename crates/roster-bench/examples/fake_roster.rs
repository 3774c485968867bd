//! A stand-in for the `roster` binary, used only by roster-bench's own tests: it
//! speaks just enough of SPEC §3 (HELLO, SUB, STATE, LOCK, UNLOCK, diffs sent at once)
//! to drive every bench scenario end to end. It is NOT Roster: no auth checks, no
//! timing model, no limits, one global lock. `fake_roster serve --listen ADDR`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

type Tx = mpsc::UnboundedSender<String>;

#[derive(Default)]
struct Room {
    seq: u64,
    members: HashMap<String, (String, Value, Tx)>,
    locks: HashMap<String, String>,
}

#[derive(Default)]
struct World {
    rooms: HashMap<String, Room>,
    next_session: u64,
}

impl Room {
    fn member(&self, sid: &str) -> Value {
        let (user, state, _) = &self.members[sid];
        json!({"userId": user, "status": "online", "session": {"sessionId": sid, "state": state}})
    }
    fn broadcast(&mut self, diff: Value) {
        self.seq += 1;
        let mut diff = diff;
        diff["seq"] = json!(self.seq);
        let text = diff.to_string();
        for (_, _, tx) in self.members.values() {
            let _ = tx.send(text.clone());
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let listener = TcpListener::bind(listen.as_deref().unwrap_or("127.0.0.1:0"))
        .await
        .expect("bind");
    eprintln!(
        "INFO fake roster listening on http://{}",
        listener.local_addr().expect("addr")
    );
    let world = Arc::new(Mutex::new(World::default()));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let world = world.clone();
        tokio::spawn(async move {
            if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                connection(ws, world).await;
            }
        });
    }
}

async fn connection(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    world: Arc<Mutex<World>>,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let writer = tokio::spawn(async move {
        while let Some(text) = rx.recv().await {
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
    });
    let mut me: Option<(String, String)> = None; // (sessionId, userId)
    let mut joined: Vec<String> = Vec::new();
    while let Some(Ok(frame)) = stream.next().await {
        let Message::Text(text) = frame else { continue };
        let Ok(msg) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        let r = msg.get("ref").cloned().unwrap_or(Value::Null);
        let room_key = msg
            .get("room")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let mut w = world.lock().expect("fake world lock");
        let reply = match (msg.get("type").and_then(Value::as_str), &me) {
            (Some("HELLO"), _) => {
                w.next_session += 1;
                let sid = format!("s{}", w.next_session);
                let user = msg
                    .get("clientId")
                    .and_then(Value::as_str)
                    .unwrap_or("anon")
                    .to_owned();
                me = Some((sid.clone(), user.clone()));
                json!({"type": "WELCOME", "ref": r, "sessionId": sid, "userId": user})
            }
            (Some("SUB"), Some((sid, user))) => {
                let room = w.rooms.entry(room_key.clone()).or_default();
                room.members
                    .insert(sid.clone(), (user.clone(), json!({}), tx.clone()));
                let joined_member = room.member(sid);
                // Others get the join; the subscriber gets the snapshot at the new seq.
                room.seq += 1;
                let diff = json!({"type": "PRESENCE_DIFF", "room": room_key, "seq": room.seq,
                                  "joins": [joined_member], "leaves": [], "updates": []})
                .to_string();
                for (other, (_, _, otx)) in &room.members {
                    if other != sid {
                        let _ = otx.send(diff.clone());
                    }
                }
                joined.push(room_key.clone());
                let users: Vec<Value> = room
                    .members
                    .iter()
                    .map(|(s, (u, st, _))| json!({"userId": u, "status": "online", "sessions": [{"sessionId": s, "state": st}]}))
                    .collect();
                json!({"type": "PRESENCE", "ref": r, "room": room_key, "seq": room.seq, "count": users.len(), "users": users})
            }
            (Some("STATE"), Some((sid, _))) => {
                if let Some(room) = w.rooms.get_mut(&room_key) {
                    if let Some(m) = room.members.get_mut(sid) {
                        m.1 = msg.get("state").cloned().unwrap_or(Value::Null);
                        let member = room.member(sid);
                        room.broadcast(json!({"type": "PRESENCE_DIFF", "room": room_key, "joins": [], "leaves": [], "updates": [member]}));
                    }
                }
                continue;
            }
            (Some("LOCK"), Some((sid, user))) => {
                let field = msg
                    .get("field")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let room = w.rooms.entry(room_key.clone()).or_default();
                let holder = room
                    .locks
                    .entry(field.clone())
                    .or_insert_with(|| sid.clone())
                    .clone();
                let owner = json!({"userId": user, "sessionId": holder});
                json!({"type": "LOCK_ACK", "ref": r, "room": room_key, "field": field, "success": holder == *sid, "owner": owner})
            }
            (Some("UNLOCK"), Some((sid, _))) => {
                let field = msg
                    .get("field")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let room = w.rooms.entry(room_key.clone()).or_default();
                let ok = room.locks.get(&field) == Some(sid);
                if ok {
                    room.locks.remove(&field);
                }
                json!({"type": "UNLOCK_ACK", "ref": r, "room": room_key, "field": field, "success": ok})
            }
            _ => json!({"type": "ERROR", "ref": r, "code": "unknown_type", "message": "fake"}),
        };
        let _ = tx.send(reply.to_string());
    }
    if let Some((sid, user)) = me {
        let mut w = world.lock().expect("fake world lock");
        for key in joined {
            if let Some(room) = w.rooms.get_mut(&key) {
                if room.members.remove(&sid).is_some() {
                    room.locks.retain(|_, holder| *holder != sid);
                    room.broadcast(
                        json!({"type": "PRESENCE_DIFF", "room": key, "joins": [], "updates": [],
                        "leaves": [{"userId": user, "sessionId": sid, "reason": "disconnected"}]}),
                    );
                }
            }
        }
    }
    writer.abort();
}
