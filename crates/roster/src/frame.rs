//! An encoded server message: JSON text, serialised once and shared by every
//! recipient (cloning is a reference-count bump).

use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Behind an `Arc` so that a queued frame is one pointer: every connection's
/// send queue holds its slots whether used or not.
#[derive(Clone, Debug)]
pub struct Frame(pub std::sync::Arc<Utf8Bytes>);

impl Frame {
    /// Serialises `{"type": ty, ...body}` with `type` first. `body` must serialise
    /// to a JSON object.
    pub fn encode<T: Serialize>(
        ty: &str,
        body: &T,
        reply_ref: Option<&serde_json::Value>,
    ) -> Frame {
        let mut out = String::with_capacity(128);
        out.push_str("{\"type\":");
        out.push_str(&serde_json::to_string(ty).unwrap_or_default());
        if let Some(r) = reply_ref {
            out.push_str(",\"ref\":");
            out.push_str(&serde_json::to_string(r).unwrap_or_else(|_| "null".into()));
        }
        // Serialising our own types cannot fail (no maps with non-string keys).
        let body = serde_json::to_string(body).unwrap_or_else(|_| "{}".into());
        let inner = body.trim_start_matches('{');
        if inner != "}" {
            out.push(',');
        }
        out.push_str(inner);
        Frame(std::sync::Arc::new(Utf8Bytes::from(out)))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_first_and_ref() {
        let f = Frame::encode(
            "HB_ACK",
            &serde_json::json!({"t": 1}),
            Some(&serde_json::json!("r1")),
        );
        assert_eq!(f.as_str(), r#"{"type":"HB_ACK","ref":"r1","t":1}"#);
        let f = Frame::encode("X", &serde_json::json!({}), None);
        assert_eq!(f.as_str(), r#"{"type":"X"}"#);
    }
}
