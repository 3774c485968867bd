//! Assembles a running server from a validated config: engine, node, sweeper,
//! HTTP listener, and the graceful shutdown sequence.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::clock::Clock;
use crate::config::Config;
use crate::engine::memory::MemoryEngine;
use crate::http::{self, api::RateLimiter, AppState};
use crate::node::hub::Hub;
use crate::node::Node;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Auth(String),
}

/// Binds with a large accept backlog: tokio's default of 128 drops SYNs when a
/// few hundred clients (re)connect at once, and each dropped SYN costs a client
/// a one-second retransmit.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    const BACKLOG: u32 = 4096;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

pub struct Running {
    pub addr: SocketAddr,
    pub node: Arc<Node>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Binds and starts serving; returns once the listener is bound. `stop` begins
/// the graceful shutdown: no new connections, leaves sent, connections closed 1001.
pub async fn start(config: Config, stop: CancellationToken) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let (auth, dev_secret) =
        Authenticator::from_config(&config).map_err(|e| StartError::Auth(e.0))?;
    if let Some(secret) = dev_secret {
        tracing::warn!(
            "no auth.jwt_secret configured: using a random dev secret for this run only. \
             Mint tokens with: ROSTER_AUTH_JWT_SECRET={secret} roster token --user alice"
        );
        eprintln!("WARNING: no auth.jwt_secret configured; dev secret for this run: {secret}");
    }
    let addr = config.listen_addr().map_err(|e| StartError::Listen {
        addr: config.listen.clone(),
        source: std::io::Error::other(e),
    })?;
    let listener = bind(addr).map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen.clone(),
        source,
    })?;

    let clock = Clock::new();
    let hub = Arc::new(Hub::default());
    let engine = Arc::new(MemoryEngine::new(hub.clone(), clock));
    let node = Node::new(config.clone(), clock, engine, hub);
    let sweeper_stop = CancellationToken::new();
    tokio::spawn(node.clone().run_sweeper(sweeper_stop.clone()));

    let state = AppState {
        node: node.clone(),
        auth: Arc::new(auth),
        metrics: crate::metrics::install(),
        rest_limiter: Arc::new(RateLimiter::new(config.limits.rest_requests_per_second)),
    };
    let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
    // Presence frames are small: never let Nagle hold them for a delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let node2 = node.clone();
    let task = tokio::spawn(async move {
        let shutdown = {
            let node = node2.clone();
            async move {
                stop.cancelled().await;
                tracing::info!("shutting down: sending leaves and closing connections");
                node.shutdown().await;
                // Let connection tasks drain their queues and write their close
                // frames (each bounds that to about 2 s).
                let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
                while node
                    .hub
                    .connections
                    .load(std::sync::atomic::Ordering::SeqCst)
                    > 0
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!("server error: {e}");
        }
        sweeper_stop.cancel();
    });
    tracing::info!(%bound, "roster listening");
    eprintln!("roster listening on http://{bound}");
    Ok(Running {
        addr: bound,
        node,
        task,
    })
}
