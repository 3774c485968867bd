//! Gauges of live state that are too costly to keep exact on every change, or
//! that other nodes change behind this one's back (Redis engine): sampled once per
//! `database.stats_sample_interval`, on the statistics sampling task. Counts of
//! shared state (locks, stale entities) are read from the engine, so every node
//! reports the same cluster-wide value; counts of this node's own state (online
//! users) come from its hub. Also the health gauges: the engine's own check and a
//! database ping. Reads only; never changes presence.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Node;
use crate::metrics as m;

static DB_WAS_UP: AtomicBool = AtomicBool::new(true);

/// What one sample found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveCounts {
    pub sessions: usize,
    pub online_users: usize,
    pub locks_held: usize,
    pub stale_entities: usize,
}

/// Counts live state and sets the gauges; also pings the database (bounded by
/// `ping_timeout`) for [`m::DATABASE_UP`].
pub async fn sample(node: &Node, ping_timeout: Duration) -> LiveCounts {
    let sessions = node.hub.sessions.len();
    let online_users = node
        .hub
        .sessions
        .iter()
        .map(|s| s.value().user_ref.clone())
        .collect::<HashSet<_>>()
        .len();
    // Set before any await: a session opened while the engine is read below must
    // not be overwritten by this older count. (`roster_sessions` itself is kept
    // exact by the node on every open and end; the sample only reports it.)
    metrics::gauge!(m::ONLINE_USERS).set(online_users as f64);
    // Read from the engine (every room of the cluster on Redis). Unreachable:
    // these two gauges keep their last values, and `roster_redis_up` says why.
    let engine_counts = async {
        let (mut locks_held, mut stale_entities) = (0, 0);
        for room in node.engine.all_rooms().await? {
            if room.entity.stale {
                stale_entities += 1;
            }
            locks_held += node.engine.locks(&room.id).await?.map_or(0, |l| l.len());
        }
        Ok::<_, crate::engine::EngineError>((locks_held, stale_entities))
    }
    .await;
    let (locks_held, stale_entities) = match engine_counts {
        Ok(c) => {
            metrics::gauge!(m::LOCKS_HELD).set(c.0 as f64);
            metrics::gauge!(m::STALE_ENTITIES).set(c.1 as f64);
            c
        }
        Err(_) => (0, 0),
    };
    let counts = LiveCounts {
        sessions,
        online_users,
        locks_held,
        stale_entities,
    };
    metrics::gauge!(m::REDIS_UP).set(up(node.engine.healthy()));
    // At shutdown the store is closed under a sample in flight: no false alarm.
    if node.shutting_down.load(Ordering::Relaxed) {
        return counts;
    }
    let db_up = matches!(
        tokio::time::timeout(ping_timeout, node.store.ping()).await,
        Ok(Ok(()))
    );
    // Said once per change, not once per sample through an outage.
    if DB_WAS_UP.swap(db_up, Ordering::Relaxed) != db_up {
        if db_up {
            tracing::info!("database health check: reachable again");
        } else {
            tracing::warn!("database health check failed (no answer to a ping)");
        }
    }
    metrics::gauge!(m::DATABASE_UP).set(up(db_up));
    counts
}

fn up(ok: bool) -> f64 {
    if ok {
        1.0
    } else {
        0.0
    }
}
