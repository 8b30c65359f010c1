//! The wsline hub: a real-time server people run as is (`wsline serve`).
//!
//! Channels with fan-out, presence, recovery after reconnect (offsets and
//! epochs), JWT auth, rate limits, slow-consumer protection, an HTTP API
//! and Prometheus metrics, all on one port.
//!
//! Layout: [`config`] (the table of settings, per-channel patterns),
//! [`settings`] (how settings are written and shown), [`protocol`] (the
//! JSON client protocol), [`engine`] (offsets, history, presence, delivery;
//! in-memory by default), [`recovery`] (the recovery rule and paced
//! replay both engines share), [`outbox`] (per-connection bounded queues),
//! `session` (one WebSocket client), `http` (the API, metrics, health,
//! demo page), [`auth`] (JWT), [`metrics`]; [`redis_engine`] (several
//! nodes through Redis) and [`any_engine`] (the one `serve` runs).
#![warn(missing_docs, unreachable_pub)]

pub mod any_engine;
pub mod auth;
pub mod config;
pub mod engine;
mod http;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod recovery;
pub mod redis_engine;
mod session;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use any_engine::AnyEngine;
pub use config::HubConfig;
use metrics::Metrics;

/// Shared state of a running hub.
pub(crate) struct Hub {
    pub(crate) config: Arc<HubConfig>,
    pub(crate) engine: AnyEngine,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) shutdown: watch::Receiver<bool>,
    next_client: AtomicU64,
    client_prefix: String,
}

impl Hub {
    pub(crate) fn new_client_id(&self) -> String {
        format!(
            "{}{}",
            self.client_prefix,
            self.next_client.fetch_add(1, Relaxed)
        )
    }
}

/// Serves the hub on `listener` until `shutdown` completes, then closes
/// every client with 1001, waits for them up to the close timeout, and
/// returns.
pub async fn serve(
    listener: TcpListener,
    config: HubConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::default());
    let acceptor = wsline::Acceptor::new(listener, wsline::Gate::new(config.server.limits));
    let (stop_tx, stop_rx) = watch::channel(false);
    let hub = Arc::new(Hub {
        engine: AnyEngine::new(config.clone(), metrics.clone()).map_err(std::io::Error::other)?,
        config: config.clone(),
        metrics,
        shutdown: stop_rx,
        next_client: AtomicU64::new(1),
        client_prefix: format!("{:06x}-", rand::random::<u32>() & 0xff_ffff),
    });

    let mut tasks = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = sweep.tick() => hub.engine.sweep(),
            accepted = acceptor.accept() => match accepted {
                wsline::Accepted::Admitted { tcp, peer, handshake } => {
                    tasks.spawn(handle(hub.clone(), tcp, peer, handshake));
                }
                // Past a cap: answered 503 and closed already, no task.
                wsline::Accepted::Refused { .. } => {
                    hub.metrics.refused.fetch_add(1, Relaxed);
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(acceptor);
    let _ = stop_tx.send(true);
    let grace = config.server.protocol.close_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    Ok(())
}

/// One TCP connection: an HTTP request, possibly upgraded to WebSocket.
/// `handshake` holds the gate's handshake slot until the request is read
/// and admitted as a WebSocket (an HTTP request holds it to the end).
async fn handle(hub: Arc<Hub>, mut tcp: TcpStream, peer: SocketAddr, handshake: wsline::Handshake) {
    let (request, leftover) = match wsline::read_head(&mut tcp, &hub.config.server).await {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(%peer, "bad request: {e}");
            return;
        }
    };
    if request.path() == "/ws" {
        let _open = match handshake.open() {
            Ok(permit) => permit,
            Err(refusal) => {
                hub.metrics.refused.fetch_add(1, Relaxed);
                wsline::refuse(&mut tcp, &refusal.response()).await;
                return;
            }
        };
        session::run(hub, tcp, peer, request, leftover).await;
    } else {
        http::answer(&hub, tcp, peer, request, leftover).await;
        drop(handshake);
    }
}
