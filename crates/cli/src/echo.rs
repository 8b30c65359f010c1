//! `wsline echo`: an echo server with graceful shutdown.
//!
//! Owns the listener, the per-connection echo loop, and SIGINT/SIGTERM
//! handling (Close 1001 to every client, wait up to the close timeout,
//! exit 0).

use std::io::Write;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wsline::{CloseCode, ServerConfig, WebSocket};

use crate::secs::{optional, parse_secs};

/// Options of `wsline echo`.
#[derive(Args, Debug)]
pub(crate) struct EchoArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: String,
    /// Largest incoming message in bytes; larger → Close 1009.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_message_size: usize,
    /// Seconds between keepalive pings (0 disables).
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_secs)]
    ping_interval: Duration,
    /// Seconds to wait for a pong before closing with 1011.
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_secs)]
    ping_timeout: Duration,
    /// Seconds to wait for the closing handshake.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    close_timeout: Duration,
    /// Seconds a client has to complete the opening handshake.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    handshake_timeout: Duration,
    /// Allowed Origin (repeatable); others get 403. Requests without Origin are allowed.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Supported subprotocol (repeatable), in preference order.
    #[arg(long, value_name = "NAME")]
    protocol: Vec<String>,
    /// Never accept permessage-deflate.
    #[arg(long)]
    no_compression: bool,
    /// Open connections; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = wsline::Limits::default().max_connections)]
    max_connections: usize,
    /// Connections in their opening handshake; more are refused at once.
    #[arg(long, value_name = "N", default_value_t = wsline::Limits::default().max_handshakes)]
    max_handshakes: usize,
    /// Connections in their opening handshake from one IP (IPv6: one /64); 0: no cap.
    #[arg(long, value_name = "N", default_value_t = wsline::Limits::default().max_connecting_per_ip)]
    max_connecting_per_ip: usize,
    /// Seconds a client may take none of the pending output before it is dropped (0: never).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    write_timeout: Duration,
    /// Seconds without a message from a client before closing it with 1001 (0: never).
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    idle_timeout: Duration,
    /// Print `stats open=N handshakes=N addresses=N refused=N tasks=N` on stderr this often (0: never).
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    stats_interval: Duration,
}

impl EchoArgs {
    fn server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::default();
        config.protocol.max_message_size = self.max_message_size;
        config.protocol.max_frame_size = self.max_message_size;
        config.protocol.ping_interval = optional(self.ping_interval);
        config.protocol.ping_timeout = optional(self.ping_timeout);
        config.protocol.close_timeout = self.close_timeout;
        config.handshake_timeout = self.handshake_timeout;
        config.allowed_origins = self.allow_origin.clone();
        config.subprotocols = self.protocol.clone();
        if self.no_compression {
            config.deflate = None;
        }
        config.write_timeout = optional(self.write_timeout);
        config.idle_timeout = optional(self.idle_timeout);
        config.limits.max_connections = self.max_connections;
        config.limits.max_handshakes = self.max_handshakes;
        config.limits.max_connecting_per_ip = self.max_connecting_per_ip;
        config
    }
}

pub(crate) async fn run(args: EchoArgs) -> i32 {
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let signal = shutdown_signal();
    println!("listening on ws://{addr}");
    let _ = std::io::stdout().flush();

    let config = args.server_config();
    let gate = wsline::Gate::new(config.limits);
    if let Some(every) = optional(args.stats_interval) {
        crate::stats::spawn(gate.clone(), every);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Past a cap: answered and closed here, no task.
                let handshake = match gate.admit(peer.ip()) {
                    Ok(permit) => permit,
                    Err(refusal) => {
                        tracing::debug!(%peer, "refused: {refusal}");
                        refusal.refuse_now(tcp);
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let config = config.clone();
                let shutdown = shutdown_rx.clone();
                tasks.spawn(async move {
                    let mut open = None;
                    let accepted = wsline::accept_with(tcp, &config, |_| {
                        open = Some(handshake.open().map_err(|r| r.response())?);
                        Ok(wsline::Acceptance::default())
                    });
                    match accepted.await {
                        // `open` holds the connection's slot until it ends.
                        Ok(ws) => echo(ws, shutdown).await,
                        Err(e) => tracing::debug!(%peer, "handshake failed: {e}"),
                    }
                    drop(open);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    // Every connection closes with 1001 and waits for its peer up to the
    // close timeout; give the tasks that long plus a margin.
    let deadline = args.close_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    0
}

/// Echoes every message back with the same type until the connection ends
/// or the server shuts down.
pub(crate) async fn echo<S>(mut ws: WebSocket<S>, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            biased;
            _ = async { let _ = shutdown.wait_for(|stop| *stop).await; } => {
                let _ = ws.close(CloseCode::GOING_AWAY, "server shutting down").await;
                return;
            }
            msg = ws.recv() => match msg {
                // Queued; written before the next read blocks, so replies to
                // pipelined messages go out together.
                Some(Ok(m)) => { let _ = ws.feed(m).await; }
                Some(Err(e)) => {
                    tracing::debug!("connection ended: {e}");
                    return;
                }
                None => return,
            }
        }
    }
}

/// SIGINT or SIGTERM. The handlers are installed when this is called (not
/// when first polled), so call it before announcing the listening address:
/// a signal right after that line must still mean a graceful shutdown.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
