//! `wsline echo`: an echo server with graceful shutdown.
//!
//! Owns the listener, the per-connection echo loop, TLS for `wss://`
//! (`--tls-cert`/`--tls-key`, on the tokio runtime: the TLS handshake
//! inside the handshake timeout, then the same echo loop), and
//! SIGINT/SIGTERM handling (Close 1001 to every client, wait up to the
//! close timeout, exit 0).

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use clap::Args;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wsline::{reactor, Message, ServerConfig, WebSocket};

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
    /// permessage-deflate: the largest window, in bits, the server
    /// compresses with (9 to 15) [default: 12].
    #[arg(long, value_name = "BITS", value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_window_bits: Option<u8>,
    /// permessage-deflate: the largest window, in bits, a client may
    /// compress with when it lets the server choose (9 to 15) [default: 12].
    #[arg(long, value_name = "BITS", value_parser = clap::value_parser!(u8).range(9..=15))]
    deflate_client_window_bits: Option<u8>,
    /// permessage-deflate: zlib's memory level for compressing, 1 (least
    /// memory) to 9 [default: 5].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=9))]
    deflate_mem_level: Option<u8>,
    /// Open connections; more are answered 503.
    #[arg(long, value_name = "N", default_value_t = wsline::Limits::default().max_connections)]
    max_connections: usize,
    /// Connections in their opening handshake; more are refused at once.
    #[arg(long, value_name = "N", default_value_t = wsline::Limits::default().max_handshakes)]
    max_handshakes: usize,
    /// Stalled handshakes (in progress for over 3 s) one IP (IPv6: one /64) may hold;
    /// 0: no per-address rule (neither this nor the half-of-the-handshakes share).
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
    /// How connections run: `reactor` (one event loop owns them all, no
    /// task or buffer per idle connection) or `tokio` (a task each, on
    /// `wsline::WebSocket`). Default: reactor; tokio with --tls-cert (the
    /// reactor has no TLS).
    #[arg(long, value_enum)]
    runtime: Option<Runtime>,
    /// Serve wss:// (TLS 1.3 or 1.2, rustls) with this PEM certificate
    /// chain, the server's certificate first; needs --tls-key. Runs on the
    /// tokio runtime.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Event loops for `--runtime reactor`, each on a thread of its own
    /// (give it the cores to use); the kernel spreads new connections
    /// across them (SO_REUSEPORT on Linux).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: u16,
    /// Accept a connection only once its first bytes arrive (Linux
    /// TCP_DEFER_ACCEPT): one wake-up less per connection. A connection
    /// that sends nothing waits in the kernel about a second before the
    /// limits and the handshake timeout see it.
    #[arg(long)]
    defer_accept: bool,
}

/// How long a silent connection stays in the kernel with `--defer-accept`.
const DEFER_SILENT: Duration = Duration::from_secs(1);

/// `--runtime`: how `wsline echo` runs its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Runtime {
    /// `wsline::reactor`: one event loop thread owns every connection.
    Reactor,
    /// A tokio task per connection over `wsline::WebSocket`.
    Tokio,
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
        if let Some(deflate) = &mut config.deflate {
            if let Some(bits) = self.deflate_window_bits {
                deflate.server_max_window_bits = bits;
            }
            if let Some(bits) = self.deflate_client_window_bits {
                deflate.client_max_window_bits = bits;
            }
            if let Some(level) = self.deflate_mem_level {
                deflate.mem_level = level;
            }
        }
        config.write_timeout = optional(self.write_timeout);
        config.idle_timeout = optional(self.idle_timeout);
        config.limits.max_connections = self.max_connections;
        config.limits.max_handshakes = self.max_handshakes;
        config.limits.max_connecting_per_ip = self.max_connecting_per_ip;
        config
    }
}

/// The TLS configuration `--tls-cert` and `--tls-key` name, if they do.
fn tls_acceptor(args: &EchoArgs) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    match wsline::tls::server_config(cert, key) {
        Ok(config) => Ok(Some(tokio_rustls::TlsAcceptor::from(config))),
        Err(e) => {
            // The message says what failed; its sources say why.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            Err(format!(
                "--tls-cert {} --tls-key {}: {why}",
                cert.display(),
                key.display()
            ))
        }
    }
}

pub(crate) async fn run(args: EchoArgs) -> i32 {
    let tls = match tls_acceptor(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let runtime = match (args.runtime, &tls) {
        (Some(Runtime::Reactor), Some(_)) => {
            eprintln!(
                "error: --tls-cert needs --runtime tokio (the reactor has no TLS); leave --runtime out to get it"
            );
            return 2;
        }
        (Some(runtime), _) => runtime,
        (None, Some(_)) => Runtime::Tokio,
        (None, None) => Runtime::Reactor,
    };
    if runtime == Runtime::Reactor {
        let listeners = match reactor_listeners(&args.listen, args.threads.into()).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {}: {e}", args.listen);
                return 1;
            }
        };
        if args.defer_accept {
            for l in &listeners {
                if let Err(e) = reactor::defer_accept(l, DEFER_SILENT) {
                    eprintln!("error: --defer-accept: {e}");
                    return 1;
                }
            }
        }
        return run_reactor(args, listeners, shutdown_signal()).await;
    }
    if args.threads > 1 {
        eprintln!(
            "error: --threads needs --runtime reactor (the tokio runtime of wsline echo has one thread)"
        );
        return 2;
    }
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    let listener = if args.defer_accept {
        let deferred = listener.into_std().and_then(|l| {
            reactor::defer_accept(&l, DEFER_SILENT)?;
            TcpListener::from_std(l)
        });
        match deferred {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: --defer-accept: {e}");
                return 1;
            }
        }
    } else {
        listener
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    let signal = shutdown_signal();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    println!("listening on {scheme}://{addr}");
    let _ = std::io::stdout().flush();

    let config = Arc::new(args.server_config());
    let acceptor = wsline::Acceptor::new(listener, wsline::Gate::new(config.limits));
    if let Some(every) = optional(args.stats_interval) {
        crate::stats::spawn(acceptor.gate().clone(), every);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            accepted = acceptor.accept() => {
                // Past a cap: answered and closed already, no task.
                let wsline::Accepted::Admitted { tcp, handshake, .. } = accepted else {
                    continue;
                };
                let config = config.clone();
                match &tls {
                    None => {
                        tasks.spawn(EchoTask::new(
                            open_websocket(tcp, config, handshake),
                            shutdown_rx.clone(),
                        ));
                    }
                    Some(tls) => {
                        let tls = tls.clone();
                        tasks.spawn(EchoTask::new(
                            async move {
                                // The TLS handshake and the HTTP upgrade
                                // within one handshake timeout.
                                let limit = config.handshake_timeout;
                                let both = async move {
                                    let stream = tls.accept(tcp).await?;
                                    open_websocket(stream, config, handshake).await
                                };
                                tokio::time::timeout(limit, both)
                                    .await
                                    .map_err(|_| wsline::Error::HandshakeTimeout(limit))?
                            },
                            shutdown_rx.clone(),
                        ));
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(acceptor);
    let _ = shutdown_tx.send(true);
    // Every connection closes with 1001 and waits for its peer up to the
    // close timeout; give the tasks that long plus a margin.
    let deadline = wsline::shutdown_grace(args.close_timeout);
    let _ = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    0
}

/// The opening handshake of one connection of the tokio runtime: the
/// connection's slot is taken once the request is read and checked, and
/// held by the task.
async fn open_websocket<S>(
    stream: S,
    config: Arc<ServerConfig>,
    handshake: wsline::Handshake,
) -> Handshaken<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut open = None;
    let ws = wsline::accept_with(stream, &config, |_| {
        open = Some(handshake.open().map_err(|r| r.response())?);
        Ok(wsline::Acceptance::default())
    })
    .await?;
    Ok((ws, open))
}

/// Echoes every message back, on the reactor's thread.
struct Echo;

impl reactor::Handler for Echo {
    fn on_message(&mut self, conn: &mut reactor::Conn<'_>, message: Message) {
        // Fails only once the connection is closing: nothing to echo then.
        let _ = conn.send(message);
    }

    fn on_close(&mut self, _id: reactor::ConnId, termination: &wsline::Termination) {
        tracing::debug!("connection ended: {termination:?}");
    }
}

/// The listening sockets for `threads` event loops on `listen` (a host
/// name is looked up; the first address that binds wins).
async fn reactor_listeners(
    listen: &str,
    threads: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    if threads <= 1 {
        return Ok(vec![TcpListener::bind(listen).await?.into_std()?]);
    }
    let mut last = None;
    for addr in tokio::net::lookup_host(listen).await? {
        match reactor::bind_listeners(addr, threads) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    }))
}

/// `wsline echo` on [`wsline::reactor`]: a loop per listener, each on a
/// thread of its own, sharing the limits; this task waits for
/// SIGINT/SIGTERM and asks them to shut down. One loop failing stops the
/// others.
async fn run_reactor(
    args: EchoArgs,
    listeners: Vec<std::net::TcpListener>,
    signal: impl Future<Output = ()>,
) -> i32 {
    let config = args.server_config();
    let gate = wsline::Gate::new(config.limits);
    let mut reactors = Vec::with_capacity(listeners.len());
    for listener in listeners {
        match reactor::Reactor::new(listener, config.clone(), gate.clone(), Echo) {
            Ok(r) => reactors.push(r),
            Err(e) => {
                eprintln!("error: cannot start the event loop: {e}");
                return 1;
            }
        }
    }
    let addr = match reactors.first().map(reactor::Reactor::local_addr) {
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return 1;
        }
        None => {
            eprintln!("error: no listener");
            return 1;
        }
    };
    println!("listening on ws://{addr}");
    let _ = std::io::stdout().flush();
    let handles: Vec<_> = reactors.iter().map(reactor::Reactor::handle).collect();
    if let Some(every) = optional(args.stats_interval) {
        let handles = handles.clone();
        crate::stats::spawn_with(gate, every, move || {
            handles
                .iter()
                .map(reactor::ReactorHandle::connections)
                .sum()
        });
    }
    let mut running = JoinSet::new();
    for mut r in reactors {
        running.spawn_blocking(move || r.run());
    }
    let stop = || handles.iter().for_each(reactor::ReactorHandle::shutdown);
    tokio::pin!(signal);
    let mut stopping = false;
    let mut code = 0;
    loop {
        tokio::select! {
            _ = &mut signal, if !stopping => {
                stopping = true;
                stop();
            }
            ended = running.join_next() => {
                let Some(ended) = ended else { break };
                match ended {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        eprintln!("error: an event loop failed: {e}");
                        code = 1;
                    }
                    Err(e) => {
                        eprintln!("error: an event loop panicked: {e}");
                        code = 1;
                    }
                }
                if !stopping {
                    stopping = true;
                    stop();
                }
            }
        }
    }
    code
}

/// One connection of `wsline echo`, from handshake to end, as a
/// hand-written future: what an idle connection costs is this struct and
/// the boxed shutdown wait, nothing else. (An `async fn` taking the
/// `WebSocket` would hold it twice, and a `select!` loop would rebuild the
/// shutdown future for every message.)
pub(crate) struct EchoTask<S> {
    state: TaskState<S>,
    /// The gate's slot for this open connection, freed with the task.
    _open: Option<wsline::Connected>,
    /// Resolves when the server shuts down; created once, polled only
    /// when woken.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    shutting_down: bool,
}

/// What the handshake gives: the connection and its slot in the gate.
type Handshaken<S> = Result<(WebSocket<S>, Option<wsline::Connected>), wsline::Error>;

// The open state is where a connection spends its life: boxing it would
// add an allocation and save nothing.
#[allow(clippy::large_enum_variant)]
enum TaskState<S> {
    /// The opening handshake, boxed: its buffers are gone once it is over.
    Handshake(Pin<Box<dyn Future<Output = Handshaken<S>> + Send>>),
    /// Echoing; `pending` is a message read but not yet queued because the
    /// output buffer was full.
    Open {
        ws: WebSocket<S>,
        pending: Option<Message>,
    },
}

impl<S> EchoTask<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    /// A connection whose handshake `handshake` runs; `shutdown` turns true
    /// when the server stops (then: Close 1001, wait for the peer).
    pub(crate) fn new(
        handshake: impl Future<Output = Handshaken<S>> + Send + 'static,
        mut shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            state: TaskState::Handshake(Box::pin(handshake)),
            _open: None,
            shutdown: Box::pin(async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            }),
            shutting_down: false,
        }
    }
}

impl<S> Future for EchoTask<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let stop = !this.shutting_down && this.shutdown.as_mut().poll(cx).is_ready();
        if stop {
            this.shutting_down = true;
        }
        if let TaskState::Handshake(handshake) = &mut this.state {
            match ready!(handshake.as_mut().poll(cx)) {
                Ok((ws, open)) => {
                    this.state = TaskState::Open { ws, pending: None };
                    this._open = open;
                }
                Err(e) => {
                    tracing::debug!("handshake failed: {e}");
                    return Poll::Ready(());
                }
            }
        }
        let TaskState::Open { ws, pending } = &mut this.state else {
            return Poll::Ready(());
        };
        if this.shutting_down && (stop || pending.is_some()) {
            *pending = None;
            let (code, reason) = wsline::SHUTDOWN_CLOSE;
            let _ = ws.start_close(code, reason);
        }
        loop {
            if let Some(message) = pending.take() {
                match Pin::new(&mut *ws).poll_ready(cx) {
                    // Queued; written before the next read blocks, so
                    // replies to pipelined messages go out together.
                    Poll::Ready(Ok(())) => {
                        let _ = ws.write_message(cx, message);
                    }
                    // The connection is ending: reading reports how.
                    Poll::Ready(Err(_)) => {}
                    Poll::Pending => {
                        *pending = Some(message);
                        return Poll::Pending;
                    }
                }
            }
            match ready!(ws.poll_recv(cx)) {
                Some(Ok(message)) => {
                    if !this.shutting_down {
                        *pending = Some(message);
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!("connection ended: {e}");
                    return Poll::Ready(());
                }
                None => return Poll::Ready(()),
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
