//! Wire adapters over the node. Each protocol translates frames to node calls and
//! node output to frames; none decides anything about presence.

pub mod messages;
pub mod native;
pub mod opening;
pub mod pusher;
pub mod render;
pub mod socket;
pub mod stomp;
