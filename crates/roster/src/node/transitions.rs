//! Where the node hands presence transitions (`core::transition`) to their
//! consumers. The node emits each transition once in the cluster — it is the
//! node that performed the operation — and in the order it happened on that
//! node. Room events (locks, entity) go to the room's members through the
//! engine, rendered by each protocol; every transition goes to every sink.
//! An event sink (metrics here; webhooks and Kafka later) is one more
//! [`TransitionSink`], with no change to engines or protocols.

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::RwLock;

use super::Node;
use crate::core::transition::Transition;
use crate::metrics as m;

/// A consumer of transitions. Called on the emitting task: it must not block
/// (queue the work if it has any).
pub trait TransitionSink: Send + Sync + 'static {
    fn transition(&self, t: &Transition, at: SystemTime);
}

/// The sinks of one node.
pub struct Sinks(RwLock<Vec<Arc<dyn TransitionSink>>>);

impl Default for Sinks {
    /// Counting into `/metrics` (`roster_transitions_total{kind}`) is always on.
    fn default() -> Self {
        Sinks(RwLock::new(vec![Arc::new(Counted)]))
    }
}

/// `roster_transitions_total{kind}`.
struct Counted;

impl TransitionSink for Counted {
    fn transition(&self, t: &Transition, _at: SystemTime) {
        metrics::counter!(m::TRANSITIONS, "kind" => t.kind()).increment(1);
    }
}

impl Node {
    /// Adds a consumer of every transition this node emits from now on.
    pub fn add_sink(&self, sink: Arc<dyn TransitionSink>) {
        self.sinks.0.write().push(sink);
    }

    /// Hands one transition to its consumers: the room's members for a lock or
    /// entity transition (every node's, through the engine), then every sink.
    pub(crate) async fn emit(&self, t: Transition) {
        if t.is_room_event() {
            if let Some(room) = t.room() {
                if let Err(e) = self.engine.broadcast(room, &t).await {
                    // Members that missed it get the room's locks and entity
                    // state again in the snapshots of the resync after recovery.
                    tracing::warn!(room = %room.key, kind = t.kind(), "room event not sent: {e}");
                }
            }
        }
        let at = self.clock.wall_now();
        for sink in self.sinks.0.read().iter() {
            sink.transition(&t, at);
        }
    }
}
