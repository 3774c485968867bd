//! Client → server messages of the native protocol (SPEC §3), parsed from one
//! JSON text frame. Unknown fields are ignored; a missing or mistyped field is a
//! `bad_request` naming the field.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::core::error::{CoreError, ErrorCode};
use crate::ids::{RoomKey, UserId};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    pub token: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub client_id: Option<String>,
}

/// A room address: `room`, or `entity` + `id`.
#[derive(Debug, Deserialize)]
pub struct RoomAddr {
    pub room: Option<String>,
    pub entity: Option<String>,
    pub id: Option<Value>,
}

impl RoomAddr {
    pub fn key(&self) -> Result<RoomKey, CoreError> {
        let invalid = |e: crate::ids::InvalidId| CoreError::new(ErrorCode::InvalidRoom, e.0);
        match (&self.room, &self.entity, &self.id) {
            (Some(r), _, _) => RoomKey::parse(r).map_err(invalid),
            (None, Some(e), Some(id)) => {
                let id = match id {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => {
                        return Err(CoreError::new(
                            ErrorCode::BadRequest,
                            "field `id`: expected a string or number",
                        ))
                    }
                };
                RoomKey::from_entity(e, &id).map_err(invalid)
            }
            _ => Err(CoreError::new(
                ErrorCode::BadRequest,
                "missing field `room` (or `entity` + `id`)",
            )),
        }
    }
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    List,
    Count,
}

#[derive(Debug, Deserialize)]
pub struct Sub {
    #[serde(flatten)]
    pub addr: RoomAddr,
    pub state: Option<Value>,
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hb {
    pub t: Option<Value>,
    pub active: Option<bool>,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct State {
    #[serde(flatten)]
    pub addr: RoomAddr,
    pub state: Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusValue {
    Online,
    Away,
}

#[derive(Debug, Deserialize)]
pub struct Status {
    pub status: StatusValue,
}

#[derive(Debug, Deserialize)]
pub struct Lock {
    #[serde(flatten)]
    pub addr: RoomAddr,
    pub field: String,
}

/// `EMIT`: an ephemeral event to the room's other members.
#[derive(Debug, Deserialize)]
pub struct Emit {
    #[serde(flatten)]
    pub addr: RoomAddr,
    pub event: String,
    pub data: Value,
}

#[derive(Debug, Deserialize)]
pub struct Watch {
    pub users: Vec<String>,
}

impl Watch {
    pub fn user_ids(&self, max: usize) -> Result<Vec<UserId>, CoreError> {
        if self.users.len() > max {
            return Err(CoreError::new(
                ErrorCode::TooManyWatched,
                format!("at most {max} users per WATCH"),
            ));
        }
        self.users
            .iter()
            .map(|u| {
                UserId::parse(u).map_err(|e| {
                    CoreError::new(ErrorCode::BadRequest, format!("field `users`: {}", e.0))
                })
            })
            .collect()
    }
}

pub enum ClientMessage {
    Hello(Hello),
    Sub(Sub),
    Unsub(RoomAddr),
    Hb(Hb),
    State(State),
    Status(Status),
    Lock(Lock),
    Unlock(Lock),
    Watch(Watch),
    Unwatch(Watch),
    Emit(Emit),
    Bye,
}

impl ClientMessage {
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientMessage::Hello(_) => "HELLO",
            ClientMessage::Sub(_) => "SUB",
            ClientMessage::Unsub(_) => "UNSUB",
            ClientMessage::Hb(_) => "HB",
            ClientMessage::State(_) => "STATE",
            ClientMessage::Status(_) => "STATUS",
            ClientMessage::Lock(_) => "LOCK",
            ClientMessage::Unlock(_) => "UNLOCK",
            ClientMessage::Watch(_) => "WATCH",
            ClientMessage::Unwatch(_) => "UNWATCH",
            ClientMessage::Emit(_) => "EMIT",
            ClientMessage::Bye => "BYE",
        }
    }
}

/// A parsed frame: the message (or why not) and the `ref` to echo either way.
pub struct Parsed {
    pub reply_ref: Option<Value>,
    pub message: Result<ClientMessage, CoreError>,
}

pub fn parse(text: &str) -> Parsed {
    let v: Value = match serde_json::from_str(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return Parsed {
                reply_ref: None,
                message: Err(CoreError::new(
                    ErrorCode::InvalidJson,
                    "a message must be a JSON object",
                )),
            }
        }
        Err(e) => {
            return Parsed {
                reply_ref: None,
                message: Err(CoreError::new(
                    ErrorCode::InvalidJson,
                    format!("malformed JSON: {e}"),
                )),
            }
        }
    };
    let reply_ref = v
        .get("ref")
        .filter(|r| r.is_string() || r.is_number())
        .cloned();
    let message = parse_value(v);
    Parsed { reply_ref, message }
}

fn parse_value(v: Value) -> Result<ClientMessage, CoreError> {
    let ty = match v.get("type") {
        Some(Value::String(t)) => t.clone(),
        Some(_) => {
            return Err(CoreError::new(
                ErrorCode::BadRequest,
                "field `type`: expected a string",
            ))
        }
        None => {
            return Err(CoreError::new(
                ErrorCode::BadRequest,
                "missing field `type`",
            ))
        }
    };
    Ok(match ty.as_str() {
        "HELLO" => ClientMessage::Hello(fields(v)?),
        "SUB" => ClientMessage::Sub(fields(v)?),
        "UNSUB" => ClientMessage::Unsub(fields(v)?),
        "HB" => ClientMessage::Hb(fields(v)?),
        "STATE" => ClientMessage::State(fields(v)?),
        "STATUS" => ClientMessage::Status(fields(v)?),
        "LOCK" => ClientMessage::Lock(fields(v)?),
        "UNLOCK" => ClientMessage::Unlock(fields(v)?),
        "WATCH" => ClientMessage::Watch(fields(v)?),
        "UNWATCH" => ClientMessage::Unwatch(fields(v)?),
        "EMIT" => ClientMessage::Emit(fields(v)?),
        "BYE" => ClientMessage::Bye,
        other => {
            let shown: String = other.chars().take(40).collect();
            return Err(CoreError::new(
                ErrorCode::UnknownType,
                format!("unknown message type {shown:?}"),
            ));
        }
    })
}

fn fields<T: DeserializeOwned>(v: Value) -> Result<T, CoreError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let msg = if path == "." || path.is_empty() {
            inner
        } else {
            format!("field `{path}`: {inner}")
        };
        CoreError::new(ErrorCode::BadRequest, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse(text).message.err().unwrap().code
    }

    #[test]
    fn bad_input_gets_stable_codes() {
        assert_eq!(code("nope"), ErrorCode::InvalidJson);
        assert_eq!(code("[1]"), ErrorCode::InvalidJson);
        assert_eq!(code(r#"{"x":1}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"type":"DANCE"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"LOCK","room":"a"}"#), ErrorCode::BadRequest);
        let p = parse(r#"{"type":"STATE","ref":7,"room":"a","state":{"x":1},"extra":true}"#);
        assert_eq!(p.reply_ref, Some(serde_json::json!(7)));
        assert!(p.message.is_ok());
        let e = parse(r#"{"type":"HB","active":"yes"}"#)
            .message
            .err()
            .unwrap();
        assert!(e.message.contains("active"), "{}", e.message);
    }

    #[test]
    fn room_addresses() {
        let Ok(ClientMessage::Sub(s)) =
            parse(r#"{"type":"SUB","entity":"Order","id":123}"#).message
        else {
            panic!()
        };
        assert_eq!(s.addr.key().unwrap().as_str(), "Order:123");
        let Ok(ClientMessage::Sub(s)) = parse(r#"{"type":"SUB","room":"bad room"}"#).message else {
            panic!()
        };
        assert_eq!(s.addr.key().unwrap_err().code, ErrorCode::InvalidRoom);
    }
}
