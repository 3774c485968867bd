//! Closed sets of the domain. The wire spelling lives in serde attributes only.

use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    // Declaration order is merge priority, lowest first.
    Offline,
    Away,
    Online,
}

impl Status {
    /// A user's status is the best of their live sessions' (online > away > offline).
    pub fn merge(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses.into_iter().max().unwrap_or(Status::Offline)
    }
    pub fn as_u8(self) -> u8 {
        self as u8
    }
    pub fn from_u8(v: u8) -> Status {
        match v {
            2 => Status::Online,
            1 => Status::Away,
            _ => Status::Offline,
        }
    }
}

/// Participant role in a room, ordered by power.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Commenter,
    Operator,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Commenter => "commenter",
            Role::Operator => "operator",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "viewer" => Role::Viewer,
            "commenter" => Role::Commenter,
            "operator" => Role::Operator,
            "owner" => Role::Owner,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaveReason {
    Left,
    Disconnected,
    Timeout,
    Kicked,
}

impl LeaveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveReason::Left => "left",
            LeaveReason::Disconnected => "disconnected",
            LeaveReason::Timeout => "timeout",
            LeaveReason::Kicked => "kicked",
        }
    }
}

/// Session metadata as the client (or its User-Agent) describes it.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub device: String,
    pub os: Option<String>,
    pub app_version: Option<String>,
}

/// `web`/`mobile`/`tablet`/`desktop` and the OS from a User-Agent, for clients that
/// don't say. Non-browser clients without a User-Agent are `unknown`.
pub fn device_from_user_agent(ua: Option<&str>) -> (String, Option<String>) {
    let Some(ua) = ua else {
        return ("unknown".into(), None);
    };
    let os = if ua.contains("Android") {
        Some("Android")
    } else if ua.contains("iPhone") || ua.contains("iPad") || ua.contains("iPod") {
        Some("iOS")
    } else if ua.contains("Windows") {
        Some("Windows")
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        Some("macOS")
    } else if ua.contains("CrOS") {
        Some("ChromeOS")
    } else if ua.contains("Linux") {
        Some("Linux")
    } else {
        None
    };
    let device = if ua.contains("iPad")
        || ua.contains("Tablet")
        || (ua.contains("Android") && !ua.contains("Mobile"))
    {
        "tablet"
    } else if ua.contains("Mobile") || ua.contains("iPhone") {
        "mobile"
    } else if ua.contains("Electron") {
        "desktop"
    } else if ua.contains("Mozilla/") {
        "web"
    } else {
        "unknown"
    };
    (device.into(), os.map(Into::into))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_merge_prefers_online_then_away() {
        assert_eq!(
            Status::merge([Status::Away, Status::Online]),
            Status::Online
        );
        assert_eq!(Status::merge([Status::Away, Status::Away]), Status::Away);
        assert_eq!(Status::merge([]), Status::Offline);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(
            Role::Viewer < Role::Commenter
                && Role::Commenter < Role::Operator
                && Role::Operator < Role::Owner
        );
    }

    #[test]
    fn user_agents() {
        let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
        assert_eq!(
            device_from_user_agent(Some(iphone)),
            ("mobile".into(), Some("iOS".into()))
        );
        let win = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120";
        assert_eq!(
            device_from_user_agent(Some(win)),
            ("web".into(), Some("Windows".into()))
        );
        let tab = "Mozilla/5.0 (Linux; Android 13; SM-X700) Safari/537.36";
        assert_eq!(device_from_user_agent(Some(tab)).0, "tablet");
        assert_eq!(device_from_user_agent(None).0, "unknown");
    }
}

/// How a joiner wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubMode {
    List,
    Count,
}
