//! `wsline serve`: the real-time hub (see the `wsline-hub` crate).
//!
//! Owns the command line: each flag is also a key of the TOML file given
//! by `--config` (with `_` for `-`); flags win over the file, the file over
//! the defaults.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use wsline_hub::any_engine::EngineKind;
use wsline_hub::config::FileConfig;
use wsline_hub::HubConfig;

use crate::secs::{optional, parse_secs};

/// Options of `wsline serve`.
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080; port 0 picks one].
    #[arg(long)]
    listen: Option<String>,
    /// TOML file with these settings and [channels."pattern"] tables.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Key for /api/* (Authorization: Bearer KEY); without one, loopback only.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// HS256 secret: clients connect to /ws?token=JWT.
    #[arg(long, value_name = "SECRET")]
    jwt_secret: Option<String>,
    /// Allowed Origin (repeatable); others get 403.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Messages kept per channel for recovery [default: 100].
    #[arg(long, value_name = "N")]
    history_size: Option<usize>,
    /// Seconds messages stay in history [default: 300].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    history_ttl: Option<Duration>,
    /// Largest client message in bytes; larger → 1009 [default: 65536].
    #[arg(long, value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// Publishes per second per connection, burst 2×N [default: 50].
    #[arg(long, value_name = "N")]
    publish_rate: Option<u32>,
    /// Subscriptions per connection [default: 128].
    #[arg(long, value_name = "N")]
    max_subscriptions: Option<usize>,
    /// Open connections [default: 100000].
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Per-connection outgoing queue; past it → 4008 [default: 1048576].
    #[arg(long, value_name = "BYTES")]
    max_queue: Option<usize>,
    /// Seconds between keepalive pings, 0 disables [default: 20].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    ping_interval: Option<Duration>,
    /// Seconds to wait for a pong [default: 20].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    ping_timeout: Option<Duration>,
    /// Seconds to wait for closing handshakes and at shutdown [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    close_timeout: Option<Duration>,
    /// Connections in their opening handshake or an HTTP request; more get 503 at once [default: 4096].
    #[arg(long, value_name = "N")]
    max_handshakes: Option<usize>,
    /// Stalled handshakes (in progress for over a second) one IP (IPv6: one /64) may hold;
    /// 0: no per-address rule (neither this nor the half-of-the-handshakes share) [default: 64].
    #[arg(long, value_name = "N")]
    max_connecting_per_ip: Option<usize>,
    /// Seconds a client may take none of its pending output before it is dropped, 0: never [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    write_timeout: Option<Duration>,
    /// Seconds without a client message before closing it with 1001, 0: never [default: 0].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    idle_timeout: Option<Duration>,
    /// Log format on stderr: plain or json [default: plain].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Engine: memory (one process) or redis (several nodes) [default: memory].
    #[arg(long, value_name = "ENGINE")]
    engine: Option<String>,
    /// Redis server of the redis engine [default: redis://127.0.0.1:6379].
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// Redis engine: seconds before a dead node's members vanish [default: 30].
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    presence_timeout: Option<Duration>,
}

fn secs_from_file(v: Option<f64>, key: &str) -> Result<Option<Duration>, String> {
    v.map(|s| {
        if s.is_finite() && s >= 0.0 {
            Ok(Duration::from_secs_f64(s))
        } else {
            Err(format!("{key} must be zero or more seconds"))
        }
    })
    .transpose()
}

/// Merges flags over the file over the defaults. Returns the config and
/// the log format.
pub(crate) fn resolve(args: &ServeArgs) -> Result<(HubConfig, String), String> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            FileConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let mut c = HubConfig::default();
    if let Some(listen) = args.listen.clone().or(file.listen) {
        c.listen = listen
            .parse()
            .map_err(|_| format!("listen: {listen:?} is not an IP:PORT address"))?;
    }
    c.api_key = args.api_key.clone().or(file.api_key);
    c.jwt_secret = args.jwt_secret.clone().or(file.jwt_secret);
    c.allow_origin = if args.allow_origin.is_empty() {
        file.allow_origin.unwrap_or_default()
    } else {
        args.allow_origin.clone()
    };
    c.history_size = args
        .history_size
        .or(file.history_size)
        .unwrap_or(c.history_size);
    c.history_ttl = args
        .history_ttl
        .or(secs_from_file(file.history_ttl, "history_ttl")?)
        .unwrap_or(c.history_ttl);
    c.max_message_size = args
        .max_message_size
        .or(file.max_message_size)
        .unwrap_or(c.max_message_size);
    c.publish_rate = args
        .publish_rate
        .or(file.publish_rate)
        .unwrap_or(c.publish_rate);
    c.max_subscriptions = args
        .max_subscriptions
        .or(file.max_subscriptions)
        .unwrap_or(c.max_subscriptions);
    c.max_connections = args
        .max_connections
        .or(file.max_connections)
        .unwrap_or(c.max_connections);
    c.max_queue = args.max_queue.or(file.max_queue).unwrap_or(c.max_queue);
    if let Some(d) = args
        .ping_interval
        .or(secs_from_file(file.ping_interval, "ping_interval")?)
    {
        c.ping_interval = optional(d);
    }
    if let Some(d) = args
        .ping_timeout
        .or(secs_from_file(file.ping_timeout, "ping_timeout")?)
    {
        c.ping_timeout = optional(d);
    }
    if let Some(d) = args
        .close_timeout
        .or(secs_from_file(file.close_timeout, "close_timeout")?)
    {
        c.close_timeout = d;
    }
    c.max_handshakes = args
        .max_handshakes
        .or(file.max_handshakes)
        .unwrap_or(c.max_handshakes);
    c.max_connecting_per_ip = args
        .max_connecting_per_ip
        .or(file.max_connecting_per_ip)
        .unwrap_or(c.max_connecting_per_ip);
    if let Some(d) = args
        .write_timeout
        .or(secs_from_file(file.write_timeout, "write_timeout")?)
    {
        c.write_timeout = optional(d);
    }
    if let Some(d) = args
        .idle_timeout
        .or(secs_from_file(file.idle_timeout, "idle_timeout")?)
    {
        c.idle_timeout = optional(d);
    }
    // The file's tables replace the default ones (the demo chat's).
    if !file.channels.is_empty() {
        c.channels = file.channels;
    }
    if let Some(engine) = args.engine.clone().or(file.engine) {
        c.engine = engine.parse::<EngineKind>()?;
    }
    if let Some(url) = args.redis_url.clone().or(file.redis_url) {
        if c.engine != EngineKind::Redis {
            return Err("redis_url is set but the engine is memory: add --engine redis".into());
        }
        c.redis_url = url;
    }
    if c.engine == EngineKind::Redis {
        wsline_hub::redis_engine::check_url(&c.redis_url).map_err(|e| e.to_string())?;
    }
    if let Some(d) = args
        .presence_timeout
        .or(secs_from_file(file.presence_timeout, "presence_timeout")?)
    {
        if d.is_zero() {
            return Err("presence_timeout must be more than 0 seconds".into());
        }
        c.presence_timeout = d;
    }
    let log_format = args
        .log_format
        .clone()
        .or(file.log_format)
        .unwrap_or_else(|| "plain".into());
    if !matches!(log_format.as_str(), "plain" | "json") {
        return Err(format!(
            "log_format must be plain or json, not {log_format:?}"
        ));
    }
    Ok((c, log_format))
}

pub(crate) async fn run(config: HubConfig) -> i32 {
    let listener = match tokio::net::TcpListener::bind(config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen);
            return 1;
        }
    };
    let shutdown = crate::echo::shutdown_signal();
    match listener.local_addr() {
        Ok(addr) => println!("listening on http://{addr}"),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    }
    let _ = std::io::stdout().flush();
    match wsline_hub::serve(listener, config, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}
