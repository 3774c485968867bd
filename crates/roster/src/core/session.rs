//! What the core knows of a live session: its immutable metadata plus the few
//! values that change often (latency, the owning user's merged status), kept in
//! atomics so readers never take a lock.

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use super::types::{DeviceInfo, Status};
use crate::ids::{SessionId, TenantId, UserId};

const NO_LATENCY: u32 = u32::MAX;

#[derive(Debug)]
pub struct SessionMeta {
    pub id: SessionId,
    pub tenant: TenantId,
    pub user: UserId,
    pub name: Option<String>,
    pub info: Option<Value>,
    pub device: DeviceInfo,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub connected_at: SystemTime,
    latency_ms: AtomicU32,
    /// The user's merged status, shared by all sessions of that user on this node.
    pub user_status: Arc<AtomicU8>,
}

impl SessionMeta {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: SessionId,
        tenant: TenantId,
        user: UserId,
        name: Option<String>,
        info: Option<Value>,
        device: DeviceInfo,
        client_id: Option<String>,
        ip: Option<String>,
        user_agent: Option<String>,
        connected_at: SystemTime,
        user_status: Arc<AtomicU8>,
    ) -> Self {
        Self {
            id,
            tenant,
            user,
            name,
            info,
            device,
            client_id,
            ip,
            user_agent,
            connected_at,
            latency_ms: AtomicU32::new(NO_LATENCY),
            user_status,
        }
    }

    /// A session that says nothing about itself (no name, device details,
    /// client id or address), connected now: for tests and tools.
    pub fn bare(id: SessionId, tenant: TenantId, user: UserId, user_status: Arc<AtomicU8>) -> Self {
        Self::new(
            id,
            tenant,
            user,
            None,
            None,
            DeviceInfo::default(),
            None,
            None,
            None,
            SystemTime::now(),
            user_status,
        )
    }

    pub fn latency_ms(&self) -> Option<u32> {
        match self.latency_ms.load(Ordering::Relaxed) {
            NO_LATENCY => None,
            v => Some(v),
        }
    }

    /// Rolling average (EWMA, weight 1/4 for the newest sample) of round-trip time,
    /// fed by client reports (`HB.latencyMs`) and server ping/pong.
    pub fn record_latency(&self, sample_ms: u32) {
        let sample = sample_ms.min(600_000);
        let next = match self.latency_ms() {
            None => sample,
            Some(avg) => ((avg as u64 * 3 + sample as u64) / 4) as u32,
        };
        self.latency_ms.store(next, Ordering::Relaxed);
    }

    pub fn user_status(&self) -> Status {
        Status::from_u8(self.user_status.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_a_rolling_average() {
        let m = SessionMeta::bare(
            SessionId::new_random(),
            TenantId::default_tenant(),
            UserId::parse("u").unwrap(),
            Arc::new(AtomicU8::new(0)),
        );
        assert_eq!(m.latency_ms(), None);
        m.record_latency(100);
        assert_eq!(m.latency_ms(), Some(100));
        m.record_latency(20);
        assert_eq!(m.latency_ms(), Some(80));
    }
}

/// A live session as REST lists it (`GET /sessions`, `/users/{id}/presence`):
/// what its node knows of it now. Also what nodes send each other when asked
/// for their sessions (see `Cluster::remote_sessions`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfoView {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub device: String,
    pub os: Option<String>,
    pub app_version: Option<String>,
    pub client_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub connected_at: String,
    pub last_heartbeat_at: String,
    pub latency_ms: Option<u32>,
    pub status: Status,
    pub connected: bool,
    pub rooms: Vec<String>,
}
