//! The wsline hub: a real-time server people run as is (`wsline serve`).
//!
//! Channels with fan-out, presence, recovery after reconnect (offsets and
//! epochs), JWT auth, rate limits, slow-consumer protection, an HTTP API
//! and Prometheus metrics, all on one port.
//!
//! Layout, in the order data flows: `session` (one WebSocket client:
//! its requests in, its outbox out), [`engine`] (offsets, history,
//! presence, delivery: the in-memory engine by default, Redis for several
//! nodes, and the recovery rule both share), [`outbox`] (per-connection
//! bounded queues the engine fills and the session drains); around them
//! [`protocol`] (the JSON client protocol), [`config`] (the table of
//! settings, per-channel patterns), [`settings`] (how settings are
//! written and shown), `http` (the API, metrics, health, demo page),
//! [`auth`] (JWT), [`jwks`] (the key set behind `jwks_url`), `hooks`
//! (asking the application's backend before a connect, subscribe or
//! publish), `http_client` (the small HTTP/1.1 client of both), [`metrics`],
//! `drain` (how the hub leaves: health first, closes paced), `webhooks`
//! (telling the backend what happened, in signed batches), `front`
//! (what each connection speaks: the WebSocket fast path, keep-alive
//! HTTP/1.1 or HTTP/2 through hyper), [`tls`] (the certificate in use,
//! reloaded on SIGHUP), [`bridge`] (message queues such as NATS into and
//! out of channels).
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod bridge;
pub mod config;
mod drain;
pub mod engine;
mod front;
mod hooks;
mod http;
mod http_client;
pub mod jwks;
pub mod metrics;
pub mod outbox;
pub mod protocol;
mod session;
pub mod settings;
pub mod tls;
mod webhooks;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{FutureExt, OptionFuture};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use config::HubConfig;
use engine::AnyEngine;
use metrics::Metrics;
use outbox::Outbox;
use tls::TlsReloader;

/// Shared state of a running hub.
pub(crate) struct Hub {
    pub(crate) config: Arc<HubConfig>,
    /// The token verifier built from the configuration.
    pub(crate) auth: auth::Auth,
    /// The backend hooks (`[hooks]`).
    pub(crate) hooks: hooks::Hooks,
    pub(crate) engine: AnyEngine,
    pub(crate) metrics: Arc<Metrics>,
    next_client: AtomicU64,
    client_prefix: String,
    /// Every open session's outbox, by session number: how shutdown
    /// reaches them (one entry per connection instead of a shutdown
    /// future in every session).
    sessions: Mutex<HashMap<u64, Arc<Outbox>>>,
    /// Told when `sessions` becomes empty (a drain waits for it).
    emptied: tokio::sync::Notify,
    /// Set when a drain starts: `/healthz` answers 503.
    draining: AtomicBool,
    /// Told when a drain is asked for (`POST /api/drain`).
    drain_asked: tokio::sync::Notify,
    /// Set when a drain's grace is over: new upgrades are refused and a
    /// session that opens anyway is closed at once.
    stopping: AtomicBool,
    /// The webhooks (`[webhooks]`), when configured.
    pub(crate) webhooks: Option<Arc<webhooks::Webhooks>>,
    /// The accept loop's caps; WebSockets over HTTP/2 take their
    /// open-connection permits from it too.
    pub(crate) gate: wsline::Gate,
    /// True once a drain's grace is over: connections served by hyper
    /// (keep-alive HTTP/1.1, HTTP/2) shut down gracefully.
    stopped: watch::Sender<bool>,
    /// TLS on the port (`tls_cert`, `tls_key`), if configured.
    tls: Option<TlsReloader>,
}

impl Hub {
    fn new(config: Arc<HubConfig>) -> std::io::Result<Self> {
        let metrics = Arc::new(Metrics::default());
        let webhooks =
            webhooks::Webhooks::start(&config, metrics.clone()).map_err(std::io::Error::other)?;
        let engine =
            AnyEngine::new(config.clone(), metrics.clone()).map_err(std::io::Error::other)?;
        if let Some(w) = &webhooks {
            engine.set_webhooks(w.clone());
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsReloader::load(cert.as_ref(), key.as_ref()).map_err(std::io::Error::other)?,
            ),
            _ => None,
        };
        Ok(Hub {
            gate: wsline::Gate::new(config.server.limits),
            stopped: watch::Sender::new(false),
            tls,
            auth: auth::Auth::from_config(&config).map_err(std::io::Error::other)?,
            hooks: hooks::Hooks::new(&config, metrics.clone()).map_err(std::io::Error::other)?,
            engine,
            config,
            metrics,
            next_client: AtomicU64::new(1),
            client_prefix: format!("{:06x}-", rand::random::<u32>() & 0xff_ffff),
            sessions: Mutex::default(),
            emptied: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            drain_asked: tokio::sync::Notify::new(),
            stopping: AtomicBool::new(false),
            webhooks,
        })
    }

    /// A new session's number and client ID.
    pub(crate) fn new_client(&self) -> (u64, String) {
        let n = self.next_client.fetch_add(1, Relaxed);
        (n, format!("{}{n}", self.client_prefix))
    }

    /// Registers session `n`'s outbox for shutdown; a session that opens
    /// once a drain is closing connections is shut down at once.
    pub(crate) fn enter(&self, n: u64, outbox: &Arc<Outbox>) {
        self.sessions_lock().insert(n, outbox.clone());
        if self.stopping.load(SeqCst) {
            outbox.shut_down();
        }
    }

    /// Forgets session `n`.
    pub(crate) fn leave(&self, n: u64) {
        let mut sessions = self.sessions_lock();
        sessions.remove(&n);
        if sessions.is_empty() {
            self.emptied.notify_one();
        }
    }

    /// Open sessions.
    pub(crate) fn open_sessions(&self) -> usize {
        self.sessions_lock().len()
    }

    /// Waits until no session is open.
    async fn all_sessions_ended(&self) {
        // `notify_one` keeps a wake-up for a waiter to come, so a session
        // that ends between the check and the wait is not missed; one
        // left from before only costs a second check.
        while self.open_sessions() > 0 {
            self.emptied.notified().await;
        }
    }

    /// Starts a drain (see `drain`): `/healthz` answers 503 from now on.
    /// False if one had started already (nothing changes then).
    pub(crate) fn start_drain(&self) -> bool {
        if self.draining.swap(true, SeqCst) {
            return false;
        }
        self.metrics.draining.store(1, Relaxed);
        self.drain_asked.notify_one();
        true
    }

    /// Whether a drain has started.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(SeqCst)
    }

    /// Whether new WebSocket upgrades are refused (a drain's grace is
    /// over).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(SeqCst)
    }

    /// Becomes true once a drain's grace is over.
    pub(crate) fn stopped(&self) -> watch::Receiver<bool> {
        self.stopped.subscribe()
    }

    fn sessions_lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Outbox>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends a drain's grace: from now on upgrades are refused and a
    /// session that opens anyway is shut down at once ([`Hub::enter`]).
    /// Returns the outboxes of the sessions open now, for the drain to
    /// shut down at its pace.
    fn stop_admitting(&self) -> Vec<Arc<Outbox>> {
        // Set before the list is taken: a session that enters after it is
        // either in the list or sees the flag.
        self.stopping.store(true, SeqCst);
        self.stopped.send_replace(true);
        self.sessions_lock().values().cloned().collect()
    }
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the hub on `listener` until a drain ends, then returns.
///
/// A drain starts when `shutdown` completes or a client of the API sends
/// `POST /api/drain`: `/healthz` answers 503 at once, new WebSocket
/// upgrades are still served for `drain_grace`, then refused with 503,
/// and the open connections are closed with 1001 at `drain_rate` a second
/// (over at most `drain_window`, in a random order). `serve` returns once
/// the last of them has ended, or `close_timeout` (plus a second) after
/// the window, whichever comes first; the listener is open until then.
pub async fn serve(
    listener: TcpListener,
    config: HubConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    prepare(config)?.serve(listener, shutdown).await
}

/// A hub whose engine is set up (its `data_dir` read back, its Redis
/// client started) but that serves nothing yet: what can fail at start
/// fails here, before a program says it is listening.
pub struct Prepared(Arc<Hub>);

/// Sets up the hub `config` describes (call inside a tokio runtime).
pub fn prepare(config: HubConfig) -> std::io::Result<Prepared> {
    Ok(Prepared(Arc::new(Hub::new(Arc::new(config))?)))
}

impl Prepared {
    /// Whether the hub serves TLS (`https://`, `wss://`).
    pub fn is_tls(&self) -> bool {
        self.0.tls.is_some()
    }

    /// The handle that rereads the certificate and key (on SIGHUP), if
    /// the hub serves TLS.
    pub fn tls(&self) -> Option<TlsReloader> {
        self.0.tls.clone()
    }

    /// Serves on `listener` until `shutdown` completes, as [`serve`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()> {
        serve_hub(self.0, listener, shutdown).await
    }
}

async fn serve_hub(
    hub: Arc<Hub>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let config = hub.config.clone();
    let acceptor = wsline::Acceptor::new(listener, hub.gate.clone());
    // The JWKS: fetched once before the first client (a failure is logged,
    // the hub starts with no keys), then every `jwks_refresh`.
    let _refresher = match hub.auth.jwks() {
        Some(jwks) => {
            let _ = jwks.refresh().await;
            Some(AbortOnDrop(tokio::spawn(
                jwks.clone().refresh_every(config.jwks_refresh),
            )))
        }
        None => None,
    };

    // The message-queue bridges (`[[bridge.nats]]`): connect in the
    // background, stop when the hub returns.
    let _bridges = bridge::start(&hub);

    let mut tasks = JoinSet::new();
    let drained = {
        let accepting = accept(&acceptor, &hub, &mut tasks);
        let draining = async {
            tokio::select! {
                _ = shutdown => {}
                _ = hub.drain_asked.notified() => {}
            }
            hub.start_drain();
            drain::run(&hub).await
        };
        tokio::select! {
            drained = draining => drained,
            never = accepting => match never {},
        }
    };
    drop(acceptor);
    // Requests and handshakes still in progress, and sessions past the
    // deadline's reach, have until the deadline.
    let ended = tokio::time::timeout_at(drained.deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    // What the last clients did (their leaves, disconnects) is sent
    // before the process may exit, within the close timeout.
    if let Some(w) = &hub.webhooks {
        if !w.flush(config.server.protocol.close_timeout).await {
            tracing::warn!("webhooks: events still unsent when the hub stopped are lost");
        }
    }
    tracing::info!(
        closed = drained.closed,
        left = hub.open_sessions(),
        took = ?drained.started.elapsed(),
        "drained: {}",
        if ended.is_ok() {
            "every connection has ended"
        } else {
            "the deadline has passed; the connections left are dropped"
        }
    );
    Ok(())
}

/// The accept loop: spawns a task per admitted connection, sweeps the
/// engine every 5 s, reaps finished tasks. Never ends; `serve` drops it.
async fn accept(
    acceptor: &wsline::Acceptor,
    hub: &Arc<Hub>,
    tasks: &mut JoinSet<()>,
) -> Infallible {
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = sweep.tick() => hub.engine.sweep(),
            accepted = acceptor.accept() => match accepted {
                wsline::Accepted::Admitted { tcp, peer, handshake } => {
                    let incoming = Box::new(Incoming { hub: hub.clone(), tcp, peer, handshake });
                    if hub.tls.is_some() {
                        tasks.spawn(handle_tls(incoming));
                    } else {
                        tasks.spawn(handle(incoming));
                    }
                }
                // Past a cap: answered 503 and closed already, no task.
                wsline::Accepted::Refused { .. } => {
                    hub.metrics.refused.fetch_add(1, Relaxed);
                }
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// A connection just accepted. `handshake` holds the gate's handshake
/// slot until the request is read and admitted as a WebSocket (an HTTP
/// request holds it to the end).
struct Incoming {
    hub: Arc<Hub>,
    tcp: TcpStream,
    peer: SocketAddr,
    handshake: wsline::Handshake,
}

/// One TCP connection: an HTTP request, possibly upgraded to WebSocket.
///
/// The task lives as long as the connection, so it is kept small: its one
/// argument is a box, everything that is over once the connection is open
/// (reading the head, the upgrade, an HTTP answer) runs boxed and is freed
/// when done, and what stays is the session's loop over its own state
/// (see `session`).
///
/// Chained with combinators, not written as one `async fn`: a future
/// keeps room for every local it ever had, so the open session (moved
/// out of `open`'s answer) would take its size twice.
#[allow(clippy::boxed_local)] // on purpose: the task keeps 8 bytes for it
fn handle(incoming: Box<Incoming>) -> impl Future<Output = ()> + Send {
    Box::pin(open(*incoming))
        .then(|opened| OptionFuture::from(opened.map(|(session, ws)| session.serve(ws))))
        .map(drop)
}

/// Reads the request; answers it (and what follows on the connection) if
/// it is plain HTTP or HTTP/2; otherwise upgrades it and gives the new
/// session (see `front`).
async fn open(incoming: Incoming) -> Option<(session::Session, wsline::WebSocket<TcpStream>)> {
    let Incoming {
        hub,
        tcp,
        peer,
        handshake,
    } = incoming;
    front::serve(hub, tcp, peer, handshake).await
}

/// One TLS connection: the TLS handshake (within the handshake timeout),
/// then HTTP/2 if ALPN chose it, else what `handle` does over TLS. The
/// TLS stream is boxed: its state is large, and a session holds it.
#[allow(clippy::boxed_local)] // as `handle`
async fn handle_tls(incoming: Box<Incoming>) {
    let Incoming {
        hub,
        tcp,
        peer,
        handshake,
    } = *incoming;
    let Some(tls) = hub.tls.as_ref().map(TlsReloader::acceptor) else {
        return;
    };
    let timeout = hub.config.server.handshake_timeout;
    let stream = match tokio::time::timeout(timeout, tls.accept(tcp)).await {
        Ok(Ok(stream)) => Box::new(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        if let Some(_open) = front::http2_permit(&hub, peer, handshake) {
            front::serve_http2(hub, stream, peer).await;
        }
        return;
    }
    if let Some((session, ws)) = Box::pin(front::serve(hub, stream, peer, handshake)).await {
        session.serve(ws).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an open connection costs is mostly its task, whose size is
    /// fixed when it is spawned: the largest state its future can be in.
    /// A step that awaits something big without boxing it (or an
    /// `async fn` that moves a large argument) grows every connection.
    /// Today: 792 bytes in a release build (800 in a debug one), of which
    /// the WebSocket is 584; 1,040 before the session's member moved into
    /// its outbox and its subscription and replay lists shrank.
    #[tokio::test]
    async fn a_connection_task_stays_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = wsline::Acceptor::new(listener, wsline::Gate::new(Default::default()));
        let _client = TcpStream::connect(addr).await.unwrap();
        let wsline::Accepted::Admitted {
            tcp,
            peer,
            handshake,
        } = acceptor.accept().await
        else {
            panic!("refused");
        };
        let hub = Arc::new(Hub::new(Arc::new(HubConfig::default())).unwrap());
        let task = handle(Box::new(Incoming {
            hub,
            tcp,
            peer,
            handshake,
        }));
        let size = std::mem::size_of_val(&task);
        eprintln!("a connection's task state: {size} bytes");
        assert!(size <= 896, "a connection's task state is {size} bytes");
    }
}
