//! Connection options and the `HELLO` message fields.

use serde_json::{Map, Value};

/// How to open the socket. Build with [`ConnectOptions::new`] and struct update syntax.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `ws://127.0.0.1:PORT/ws`
    pub url: String,
    /// Appended to the URL as `?token=` (or `&token=`).
    pub token: Option<String>,
    /// Sent as `Authorization: Bearer <bearer>` on the upgrade request.
    pub bearer: Option<String>,
    /// Sent as the `User-Agent` header.
    pub user_agent: Option<String>,
}

impl ConnectOptions {
    /// Options for `url` with no authentication on the upgrade request.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

/// Fields of the `HELLO` message; `None` fields are left out of the frame.
#[derive(Debug, Clone, Default)]
pub struct Hello {
    pub token: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub client_id: Option<String>,
}

impl Hello {
    /// A `HELLO` that authenticates with `token`.
    pub fn with_token(token: impl Into<String>) -> Self {
        Self {
            token: Some(token.into()),
            ..Self::default()
        }
    }

    /// The wire message (camelCase names).
    pub fn to_message(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::from("HELLO"));
        let fields = [
            ("token", &self.token),
            ("device", &self.device),
            ("os", &self.os),
            ("appVersion", &self.app_version),
            ("clientId", &self.client_id),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                m.insert(name.into(), Value::from(v.as_str()));
            }
        }
        Value::Object(m)
    }
}
