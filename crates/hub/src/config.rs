//! The hub's configuration: the one table of settings, the TOML file,
//! per-channel options by pattern.
//!
//! Owns every setting of the hub, each declared once in the `settings!`
//! table below: its TOML key and flag, its type, its default, where it
//! lands ([`HubConfig`], or the [`wsline::ServerConfig`] it embeds), its
//! `--help` line and its docs/hub.md row. From the table come
//! [`HubConfig`], [`FileConfig`], [`Flags`] and the merge (flags over the
//! file over the defaults, [`HubConfig::merge`]). Per-channel options
//! (`[channels."pattern"]`, [`ChannelOptions`]) and the backend hooks
//! (`[hooks]`, [`HooksConfig`]) and the bridges (`[[bridge.nats]]`,
//! [`BridgeConfig`]) are file-only and declared by hand below. How values are written is [`crate::settings`]'s.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::bridge::BridgeConfig;
use crate::engine::{EngineKind, Fsync};
pub use crate::settings::{Setting, Shown, Value};

/// The table of settings: each row declares one setting of the hub once.
///
/// A row is `key: Type { default, value, help, docs }` for a field of
/// [`HubConfig`] of its own, or `key: Type => path { … }` for a field of
/// the embedded [`wsline::ServerConfig`] (`=> a, b` writes both). The key
/// is the TOML key and, with `-` for `_`, the flag; `Type` says how values
/// are written ([`Value`]); `default` is the value without flag or key
/// (`shown` overrides how it is shown); `value` names the flag's value in
/// `--help`; `help` is the `--help` line; `docs` is docs/hub.md's meaning
/// column. From the rows come [`HubConfig`] (its own fields and
/// `Default`), [`FileConfig`], [`Flags`], [`settings`] and
/// [`HubConfig::merge`].
macro_rules! settings {
    // A setting written into the embedded ServerConfig.
    (@munch own [$($own:tt)*] server [$($server:tt)*] all [$($all:tt)*]
        $name:ident : $ty:ty => $($p:ident).+ $(, $($q:ident).+)* {
            default: $default:expr,
            $(shown: $shown:literal,)?
            value: $value:literal,
            help: $help:literal,
            docs: $docs:literal $(,)?
        }
        $($rest:tt)*
    ) => {
        settings!(@munch
            own [$($own)*]
            server [$($server)* ([server.$($p).+ $(, server.$($q).+)*], $default)]
            all [$($all)* ($name, $ty, [server.$($p).+ $(, server.$($q).+)*], $value, $help, $docs, [$($shown)?])]
            $($rest)*
        );
    };
    // A setting with a field of its own in HubConfig.
    (@munch own [$($own:tt)*] server [$($server:tt)*] all [$($all:tt)*]
        $name:ident : $ty:ty {
            default: $default:expr,
            $(shown: $shown:literal,)?
            value: $value:literal,
            help: $help:literal,
            docs: $docs:literal $(,)?
        }
        $($rest:tt)*
    ) => {
        settings!(@munch
            own [$($own)* ($name, $ty, $help, $default)]
            server [$($server)*]
            all [$($all)* ($name, $ty, [$name], $value, $help, $docs, [$($shown)?])]
            $($rest)*
        );
    };
    (@munch own [$($own:tt)*] server [$($server:tt)*] all [$($all:tt)*]) => {
        settings!(@emit own [$($own)*] server [$($server)*] all [$($all)*]);
    };
    (@shown [$shown:literal] $value:expr) => { Shown::Word($shown) };
    (@shown [] $value:expr) => { $value };
    (@emit
        own [$(($oname:ident, $oty:ty, $ohelp:literal, $odefault:expr))*]
        server [$(([$($sfirst:ident).+ $(, $($smore:ident).+)*], $sdefault:expr))*]
        all [$((
            $name:ident, $ty:ty, [$($first:ident).+ $(, $($more:ident).+)*],
            $value:literal, $help:literal, $docs:literal, [$($shown:literal)?]
        ))*]
    ) => {
        /// Every setting of the hub, with the defaults of `wsline serve`
        /// (the table in this module's source, [`settings`]).
        #[derive(Clone, Debug)]
        #[non_exhaustive]
        pub struct HubConfig {
            $(
                #[doc = $ohelp]
                pub $oname: $oty,
            )*
            /// Per-channel options by pattern (`*` matches any run of
            /// characters); the longest matching pattern wins. By default
            /// one entry, [`DEMO_CHANNELS`] with `join_leave`, for the demo
            /// chat at `/`.
            pub channels: BTreeMap<String, ChannelOptions>,
            /// The backend hooks (`[hooks]`, docs/hooks.md): none by
            /// default.
            pub hooks: HooksConfig,
            /// The webhooks (`[webhooks]`, docs/hooks.md#webhooks): off by
            /// default.
            pub webhooks: WebhooksConfig,
            /// The message-queue bridges (`[[bridge.nats]]`,
            /// docs/bridges.md): none by default.
            pub bridge: BridgeConfig,
            /// The WebSocket server's part: protocol limits and timers, the
            /// handshake's bounds, the Origin allow-list and the caps of the
            /// accept loop's [`wsline::Gate`]. The settings written into it
            /// are in the table; the rest keep the library's defaults.
            /// `max_message_size` is both `protocol.max_message_size` and
            /// `protocol.max_frame_size`: set both when changing it here.
            pub server: wsline::ServerConfig,
        }

        impl Default for HubConfig {
            fn default() -> Self {
                let mut c = Self {
                    $($oname: $odefault,)*
                    channels: default_channels(),
                    hooks: HooksConfig::default(),
                    webhooks: WebhooksConfig::default(),
                    bridge: BridgeConfig::default(),
                    server: wsline::ServerConfig::default(),
                };
                $({
                    let v = $sdefault;
                    $(c.$($smore).+ = v.clone();)*
                    c.$($sfirst).+ = v;
                })*
                c
            }
        }

        /// The TOML file: a key per setting (the flag's name with `_`),
        /// plus `[channels."pattern"]` tables.
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $(
                #[doc = concat!("`", stringify!($name), "`: ", $help)]
                pub $name: Option<<$ty as Value>::Raw>,
            )*
            /// Per-pattern channel options.
            #[serde(default)]
            pub channels: BTreeMap<String, ChannelOptions>,
            /// The backend hooks.
            #[serde(default)]
            pub hooks: HooksConfig,
            /// The webhooks.
            #[serde(default)]
            pub webhooks: WebhooksConfig,
            /// The message-queue bridges.
            #[serde(default)]
            pub bridge: BridgeConfig,
        }

        /// The settings given as flags of `wsline serve` (with the `clap`
        /// feature, `#[command(flatten)]` them into a command).
        #[derive(Clone, Debug, Default)]
        pub struct Flags {
            $(
                #[doc = concat!("`--", stringify!($name), "`: ", $help)]
                pub $name: Option<<$ty as Value>::Raw>,
            )*
        }

        /// The table of settings, in order, with their defaults.
        pub fn settings() -> Vec<Setting> {
            let d = HubConfig::default();
            vec![$(
                Setting {
                    key: stringify!($name),
                    value_name: $value,
                    help: $help,
                    docs: $docs,
                    repeatable: <$ty as Value>::REPEATABLE,
                    default: settings!(@shown [$($shown)?] <$ty as Value>::show(&d.$($first).+)),
                },
            )*]
        }

        impl HubConfig {
            /// Each setting's key and its value in this configuration, in
            /// the table's order (what `wsline serve --print-config` shows).
            pub fn values(&self) -> Vec<(&'static str, bool, Shown)> {
                vec![$(
                    (
                        stringify!($name),
                        <$ty as Value>::REPEATABLE,
                        <$ty as Value>::show(&self.$($first).+),
                    ),
                )*]
            }

            /// Flags over the file over the defaults, then the checks
            /// across settings. The file's `[channels."…"]` tables, if
            /// any, replace the default ones.
            pub fn merge(flags: &Flags, file: FileConfig) -> Result<Self, String> {
                let mut c = Self::default();
                let mut set: Vec<&'static str> = Vec::new();
                $(
                    if let Some(raw) = flags.$name.clone().or(file.$name) {
                        let v = <$ty as Value>::from_raw(raw)
                            .map_err(|e| format!("{}: {e}", stringify!($name)))?;
                        $(c.$($more).+ = v.clone();)*
                        c.$($first).+ = v;
                        set.push(stringify!($name));
                    }
                )*
                if !file.channels.is_empty() {
                    c.channels = file.channels;
                }
                c.hooks = file.hooks;
                c.webhooks = file.webhooks;
                c.bridge = file.bridge;
                c.check(&set)?;
                Ok(c)
            }
        }

        #[cfg(feature = "clap")]
        impl clap::FromArgMatches for Flags {
            fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
                let mut flags = Self::default();
                flags.update_from_arg_matches(m)?;
                Ok(flags)
            }

            fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
                $(
                    if let Some(raw) = crate::settings::from_matches::<$ty>(m, stringify!($name))? {
                        self.$name = Some(raw);
                    }
                )*
                Ok(())
            }
        }

        #[cfg(feature = "clap")]
        impl clap::Args for Flags {
            fn augment_args(cmd: clap::Command) -> clap::Command {
                let table = settings();
                let mut rows = table.iter();
                let mut cmd = cmd;
                $(
                    let row = rows.next().expect("a row per setting");
                    cmd = cmd.arg(crate::settings::arg::<$ty>(row));
                )*
                cmd
            }

            fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
                Self::augment_args(cmd)
            }
        }
    };
    ($($rows:tt)*) => {
        settings!(@munch own [] server [] all [] $($rows)*);
    };
}

settings! {
    listen: SocketAddr {
        default: SocketAddr::from(([127, 0, 0, 1], 8080)),
        value: "ADDR",
        help: "Address to listen on (IP:PORT; port 0 picks one)",
        docs: "IP:PORT to listen on; port 0 picks a free one. `0.0.0.0:PORT` or `[::]:PORT` to accept other machines",
    }
    api_key: Option<String> {
        default: None,
        value: "KEY",
        help: "Key for /api/* (Authorization: Bearer KEY); without one, loopback only",
        docs: "`/api/*` then require `Authorization: Bearer KEY`; without a key they answer loopback clients only",
    }
    jwt_secret: Option<String> {
        default: None,
        value: "SECRET",
        help: "HS256 secret: clients connect to /ws?token=JWT",
        docs: "HS256 secret: every `/ws` client then needs `?token=JWT`",
    }
    jwt_public_key: Vec<String> {
        default: Vec::new(),
        shown: "none",
        value: "PEM",
        help: "PEM public key file for RS256/ES256/EdDSA tokens (repeatable)",
        docs: "PEM file of a public key (RSA, EC P-256 or Ed25519) that verifies RS256, ES256 or EdDSA tokens; every `/ws` client then needs `?token=JWT`. Read at start: a missing or unusable file stops the hub",
    }
    jwks_url: Option<String> {
        default: None,
        value: "URL",
        help: "JWKS URL (http:// or https://) of RS256/ES256/EdDSA token keys",
        docs: "`http://` or `https://` URL of a JSON Web Key Set; every `/ws` client then needs `?token=JWT`. Fetched at start (a failure is logged and the hub starts with no keys), every `jwks_refresh`, and on a token whose `kid` is unknown, at most once every 10 seconds; a failed fetch keeps the last good set",
    }
    jwks_refresh: Duration {
        default: Duration::from_secs(300),
        value: "SECS",
        help: "Seconds between JWKS refreshes",
        docs: "how often the JWKS is fetched again",
    }
    jwt_issuer: Option<String> {
        default: None,
        value: "ISS",
        help: "Required `iss` claim of tokens",
        docs: "tokens must carry this `iss` claim",
    }
    jwt_audience: Option<String> {
        default: None,
        value: "AUD",
        help: "Required `aud` claim of tokens (or one of its items)",
        docs: "tokens must carry this `aud` claim (a string, or a list that holds it)",
    }
    allow_origin: Vec<String> => allowed_origins {
        default: Vec::new(),
        shown: "any",
        value: "ORIGIN",
        help: "Allowed Origin (repeatable); others get 403",
        docs: "browser Origins allowed on `/ws`, e.g. `https://app.example.com`; others get 403. A request without `Origin` (not a browser) is allowed. Flags replace the file's list",
    }
    history_size: usize {
        default: 100,
        value: "N",
        help: "Messages kept per channel for recovery",
        docs: "messages kept per channel for recovery (0 keeps none)",
    }
    history_ttl: Duration {
        default: Duration::from_secs(300),
        value: "SECS",
        help: "Seconds messages stay in history",
        docs: "how long a message stays in history",
    }
    data_dir: Option<String> {
        default: None,
        value: "DIR",
        help: "Keep the memory engine's history, offsets and epochs on disk in DIR (survives restarts)",
        docs: "directory where the `memory` engine keeps channel history, offsets and epochs (`DIR/history.log`), so a restart (SIGTERM or SIGKILL) keeps them and clients recover; one process per directory. See [durable history](#durable-history)",
    }
    fsync: Fsync {
        default: Fsync::Every(Duration::from_secs(1)),
        value: "POLICY",
        help: "With data_dir: `always` (a publication is on disk before it is delivered or acknowledged) or SECS between syncs",
        docs: "with `data_dir`: `always` syncs each publication to disk before it is delivered and acknowledged; a number of seconds syncs that often instead (a machine crash, not a killed process, may lose that much; channels then start new epochs)",
    }
    max_message_size: usize => protocol.max_message_size, protocol.max_frame_size {
        default: 65536,
        value: "BYTES",
        help: "Largest client message in bytes; larger → 1009",
        docs: "largest client message (and HTTP body); a larger WebSocket message closes the connection with 1009, a larger body gets 413",
    }
    publish_rate: u32 {
        default: 50,
        value: "N",
        help: "Publishes per second per connection, burst 2×N",
        docs: "publishes per second per connection, bursts of 2×N; see [the rate limit](protocol.md#rate-limit)",
    }
    max_subscriptions: usize {
        default: 128,
        value: "N",
        help: "Subscriptions per connection",
        docs: "channels per connection; more → `limit_exceeded`",
    }
    max_connections: usize => limits.max_connections {
        default: wsline::Limits::default().max_connections,
        value: "N",
        help: "Open connections",
        docs: "open WebSocket connections; more are refused with 503",
    }
    threads: usize {
        default: 0,
        value: "N",
        help: "Event loops serving connections, one thread each; 0: one per available core",
        docs: "event loops serving connections, one thread each (the tokio runtime's workers; 1: a single-threaded runtime). 0, the default, runs one per available core. Publications, presence, recovery, limits and shutdown behave the same on any number",
    }
    max_queue: usize {
        default: 1 << 20,
        value: "BYTES",
        help: "Per-connection outgoing queue; past it → 4008",
        docs: "per-connection outgoing queue; a client whose queue passes it is a slow consumer, closed with 4008",
    }
    ping_interval: Option<Duration> => protocol.ping_interval {
        default: Some(Duration::from_secs(20)),
        value: "SECS",
        help: "Seconds between keepalive pings, 0 disables",
        docs: "WebSocket Ping to each idle client this often; 0 disables",
    }
    ping_timeout: Option<Duration> => protocol.ping_timeout {
        default: Some(Duration::from_secs(20)),
        value: "SECS",
        help: "Seconds to wait for a pong, 0 disables",
        docs: "a client that does not answer a Ping in time is closed (1011); 0 disables",
    }
    close_timeout: Duration => protocol.close_timeout {
        default: Duration::from_secs(10),
        value: "SECS",
        help: "Seconds to wait for closing handshakes, and after a drain's window for the last clients",
        docs: "how long to wait for a client's answer to a Close, and after a drain's window for the clients still open",
    }
    drain_grace: Duration {
        default: Duration::ZERO,
        value: "SECS",
        help: "Draining (SIGTERM, SIGINT, POST /api/drain): seconds new WebSocket upgrades are still accepted while /healthz answers 503, before they are refused",
        docs: "when a drain starts (SIGTERM, SIGINT, `POST /api/drain`), `/healthz` answers 503 `draining` at once and new WebSocket upgrades are still accepted for this long, so a load balancer has time to notice; then they get 503 and the open connections are closed. Set it to the balancer's detection time ([operations.md](operations.md#draining))",
    }
    drain_window: Duration {
        default: Duration::from_secs(5),
        value: "SECS",
        help: "Draining: the open connections are closed with 1001 over at most this many seconds (paced by drain_rate), then the hub waits close_timeout for them",
        docs: "after `drain_grace`, the open connections are closed with 1001 in a random order, paced at `drain_rate` a second but over no more than this; the process exits when the last one is gone, or `close_timeout` after the window. 0 closes them all at once",
    }
    drain_rate: u32 {
        default: 200,
        value: "N",
        help: "Draining: connections closed per second, faster when needed to finish within drain_window",
        docs: "connections closed per second while draining (each at a random moment of its slot): N connections take N ÷ `drain_rate` seconds, or `drain_window` if that is shorter; more than 0",
    }
    handshake_timeout: Duration => handshake_timeout {
        default: wsline::ServerConfig::default().handshake_timeout,
        value: "SECS",
        help: "Seconds a new connection has to send its request head (WebSocket handshake or HTTP request); then it is dropped",
        docs: "a TCP connection whose request head (WebSocket handshake or HTTP request) has not arrived in this time is dropped, freeing its handshake slot; more than 0",
    }
    max_handshakes: usize => limits.max_handshakes {
        default: wsline::Limits::default().max_handshakes,
        value: "N",
        help: "Connections in their opening handshake or an HTTP request; more get 503 at once",
        docs: "TCP connections not yet upgraded (handshakes in progress, HTTP requests); more are refused at once with 503; one address may hold half of them ([security.md](security.md))",
    }
    max_connecting_per_ip: usize => limits.max_connecting_per_ip {
        default: wsline::Limits::default().max_connecting_per_ip,
        value: "N",
        help: "Stalled handshakes (in progress for over 3 s) one IP (IPv6: one /64) may hold; 0: no per-address rule (neither this nor the half-of-the-handshakes share)",
        docs: "stalled handshakes (in progress for over 3 s) one IP address (IPv6: one /64) may hold before it gets no more; prompt clients never count, so a burst of them from one address is served whole. 0 turns every per-address rule off (this one and the half share). Behind a reverse proxy set 0",
    }
    write_timeout: Option<Duration> => write_timeout {
        default: Some(Duration::from_secs(30)),
        value: "SECS",
        help: "Seconds a client may take none of its pending output before it is dropped, 0: never",
        docs: "a client that takes none of its pending output for this long is dropped; 0 disables",
    }
    idle_timeout: Option<Duration> => idle_timeout {
        default: None,
        value: "SECS",
        help: "Seconds without a client message before closing it with 1001, 0: never",
        docs: "a client that sends no message for this long is closed with 1001; 0 disables",
    }
    log_format: LogFormat {
        default: LogFormat::Plain,
        value: "FORMAT",
        help: "Log format on stderr: plain or json",
        docs: "stderr logs as `plain` text or `json`; the `WSLINE_LOG` environment variable sets the filter (e.g. `WSLINE_LOG=debug`)",
    }
    engine: EngineKind {
        default: EngineKind::Memory,
        value: "ENGINE",
        help: "Engine: memory (one process) or redis (several nodes)",
        docs: "`memory`, or `redis` to run several nodes joined through Redis ([scaling.md](scaling.md))",
    }
    redis_url: String {
        default: "redis://127.0.0.1:6379".to_owned(),
        value: "URL",
        help: "Redis server of the redis engine",
        docs: "the Redis server of the `redis` engine",
    }
    presence_timeout: Duration {
        default: Duration::from_secs(30),
        value: "SECS",
        help: "Redis engine: seconds before a dead node's members vanish",
        docs: "`redis` engine: a killed node's members vanish within this (nodes refresh every third of it); more than 0",
    }
    tls_cert: Option<String> {
        default: None,
        value: "FILE",
        help: "PEM certificate chain (server certificate first): serve TLS (https://, wss://, ALPN h2 and http/1.1); needs tls_key; reread on SIGHUP",
        docs: "PEM file of the certificate chain, the server's certificate first: the port then speaks TLS only (`https://`, `wss://`), offering HTTP/2 and HTTP/1.1 by ALPN. Needs `tls_key`. Read at start (an unusable file stops the hub) and again on SIGHUP; see [TLS](#tls)",
    }
    tls_key: Option<String> {
        default: None,
        value: "FILE",
        help: "PEM private key of tls_cert (PKCS#8, PKCS#1 or SEC1); reread on SIGHUP",
        docs: "PEM file of `tls_cert`'s private key (PKCS#8, PKCS#1 or SEC1); read with it",
    }
}

impl HubConfig {
    /// How many event loops serve connections: `threads`, or one per
    /// available core when it is 0.
    pub fn loops(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The checks across settings, after the merge; `set` names the
    /// settings a flag or the file gave.
    fn check(&self, set: &[&str]) -> Result<(), String> {
        if set.contains(&"redis_url") && self.engine != EngineKind::Redis {
            return Err("redis_url is set but the engine is memory: add --engine redis".into());
        }
        if self.engine == EngineKind::Redis {
            crate::engine::redis::check_url(&self.redis_url).map_err(|e| e.to_string())?;
        }
        if self.data_dir.is_some() && self.engine == EngineKind::Redis {
            return Err(
                "data_dir is for the memory engine (the redis engine keeps history in Redis): remove it or use --engine memory".into(),
            );
        }
        if set.contains(&"fsync") && self.data_dir.is_none() {
            return Err("fsync is set but data_dir is not: add --data-dir DIR".into());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(
                "tls_cert and tls_key go together: give both (or neither, for plain HTTP)".into(),
            );
        }
        if self.presence_timeout.is_zero() {
            return Err("presence_timeout must be more than 0 seconds".into());
        }
        if let Some(url) = &self.jwks_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "jwks_url must start with http:// or https://, not {url:?}"
                ));
            }
        }
        if self.jwks_refresh.is_zero() {
            return Err("jwks_refresh must be more than 0 seconds".into());
        }
        let keyed =
            self.jwt_secret.is_some() || !self.jwt_public_key.is_empty() || self.jwks_url.is_some();
        for (name, set) in [
            ("jwt_issuer", self.jwt_issuer.is_some()),
            ("jwt_audience", self.jwt_audience.is_some()),
        ] {
            if set && !keyed {
                return Err(format!(
                    "{name} is set but tokens are off: add --jwt-secret, --jwt-public-key or --jwks-url"
                ));
            }
        }
        if self.drain_rate == 0 {
            return Err("drain_rate must be more than 0 connections a second".into());
        }
        if self.server.handshake_timeout.is_zero() {
            return Err("handshake_timeout must be more than 0 seconds".into());
        }
        self.check_hooks()?;
        self.check_webhooks()?;
        self.bridge.check()
    }

    /// The `[hooks]` table against itself and the channel patterns: URLs
    /// that parse, a timeout and a bound above 0, and no hook configured
    /// on one side only (a `subscribe_url` no pattern opts in to would
    /// never be called; a `subscribe_hook = true` without the URL would
    /// call nothing).
    fn check_hooks(&self) -> Result<(), String> {
        let h = &self.hooks;
        for (key, url) in [
            ("connect_url", &h.connect_url),
            ("subscribe_url", &h.subscribe_url),
            ("publish_url", &h.publish_url),
        ] {
            if let Some(url) = url {
                crate::http_client::Endpoint::new(url)
                    .map_err(|e| format!("hooks.{key} {url:?}: {e}"))?;
            }
        }
        if !(h.timeout.is_finite() && h.timeout > 0.0 && h.timeout <= 3600.0) {
            return Err(format!(
                "hooks.timeout must be more than 0 seconds (and at most an hour), not {}",
                h.timeout
            ));
        }
        if h.max_in_flight == 0 {
            return Err("hooks.max_in_flight must be at least 1".into());
        }
        for (event, url, opted_in) in [
            (
                "subscribe",
                h.subscribe_url.is_some(),
                self.channels
                    .values()
                    .any(|o| o.subscribe_hook == Some(true)),
            ),
            (
                "publish",
                h.publish_url.is_some(),
                self.channels.values().any(|o| o.publish_hook == Some(true)),
            ),
        ] {
            if url && !opted_in {
                return Err(format!(
                    "hooks.{event}_url is set but no channel pattern opts in: add {event}_hook = true to a [channels.\"pattern\"] table (e.g. [channels.\"*\"])"
                ));
            }
            if opted_in && !url {
                return Err(format!(
                    "a [channels.\"pattern\"] table has {event}_hook = true but [hooks] has no {event}_url"
                ));
            }
        }
        Ok(())
    }
}

/// How `wsline serve` writes its logs on stderr (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Plain text lines (the default).
    #[default]
    Plain,
    /// One JSON object a line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            other => Err(format!("log_format must be plain or json, not {other:?}")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Plain => "plain",
            Self::Json => "json",
        })
    }
}

/// Settings whose value `--print-config` never shows.
const SECRETS: [&str; 2] = ["api_key", "jwt_secret"];

impl HubConfig {
    /// The effective configuration as a TOML file (`wsline serve
    /// --print-config`): every setting, unset ones as comments, secrets
    /// masked (`api_key`, `jwt_secret`, and a password in `redis_url` or
    /// a bridge's `servers`),
    /// then the channel patterns.
    ///
    /// A setting at its default is shown as a comment (`# history_size =
    /// 100`), so the output read back as a file gives the same
    /// configuration.
    pub fn to_toml_masked(&self) -> String {
        let mut out = String::new();
        let defaults = Self::default().values();
        for ((key, repeatable, shown), (_, _, default)) in self.values().into_iter().zip(defaults) {
            let at_default = shown == default;
            let line = match shown {
                Shown::Word(word) => format!("# {key}: {word}\n"),
                Shown::Value(_) if SECRETS.contains(&key) => format!("{key} = \"********\"\n"),
                Shown::Value(v) if repeatable => {
                    let items: Vec<String> = v
                        .split(", ")
                        .map(|i| toml::Value::String(i.to_owned()).to_string())
                        .collect();
                    format!("{key} = [{}]\n", items.join(", "))
                }
                Shown::Value(v) => {
                    let v = if key == "redis_url" {
                        mask_password(&v)
                    } else {
                        v
                    };
                    let bare = v.parse::<i64>().is_ok()
                        || v.parse::<f64>().is_ok_and(f64::is_finite)
                        || v == "true"
                        || v == "false";
                    if bare {
                        format!("{key} = {v}\n")
                    } else {
                        format!("{key} = {}\n", toml::Value::String(v))
                    }
                }
            };
            if at_default && !line.starts_with('#') {
                out.push_str("# ");
            }
            out.push_str(&line);
        }
        for (pattern, options) in &self.channels {
            out.push_str(&format!(
                "\n[channels.{}]\n",
                toml::Value::String(pattern.clone())
            ));
            out.push_str(&toml::to_string(options).unwrap_or_default());
        }
        if self.hooks != HooksConfig::default() {
            out.push_str("\n[hooks]\n");
            out.push_str(&toml::to_string(&self.hooks).unwrap_or_default());
        }
        if self.webhooks != WebhooksConfig::default() {
            let mut webhooks = self.webhooks.clone();
            if webhooks.secret.is_some() {
                webhooks.secret = Some("********".to_owned());
            }
            out.push_str("\n[webhooks]\n");
            out.push_str(&toml::to_string(&webhooks).unwrap_or_default());
        }
        if self.bridge != BridgeConfig::default() {
            #[derive(Serialize)]
            struct File<'a> {
                bridge: &'a BridgeConfig,
            }
            let mut bridge = self.bridge.clone();
            for entry in &mut bridge.nats {
                for url in &mut entry.servers {
                    *url = mask_password(url);
                }
            }
            out.push('\n');
            out.push_str(&toml::to_string(&File { bridge: &bridge }).unwrap_or_default());
        }
        out
    }
}

/// `scheme://user:password@host…` with the password replaced by stars.
pub(crate) fn mask_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:********{}", &rest[at..]),
        None => url.to_owned(),
    }
}

/// Options of the channels a pattern matches. Unset keys take the hub's
/// defaults.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelOptions {
    /// Messages kept for recovery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_size: Option<usize>,
    /// Seconds a message stays in history.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_ttl: Option<f64>,
    /// Whether members are tracked and presence queries answered (default
    /// true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<bool>,
    /// Whether each subscribe and unsubscribe is announced to the other
    /// members with a `join` or `leave` event (default false: in a channel
    /// of N members that is N events per subscribe). Needs `presence`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join_leave: Option<bool>,
    /// Whether clients may publish (default true; the HTTP API always may).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_publish: Option<bool>,
    /// Whether a client's subscribe asks the backend first (the `[hooks]`
    /// `subscribe_url`; default false).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe_hook: Option<bool>,
    /// Whether a client's publish asks the backend first (the `[hooks]`
    /// `publish_url`; default false). The HTTP API's publishes never do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_hook: Option<bool>,
}

/// The options that apply to one channel.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelPolicy {
    /// Messages kept for recovery.
    pub history_size: usize,
    /// How long a message stays in history.
    pub history_ttl: Duration,
    /// Members tracked and presence queries answered.
    pub presence: bool,
    /// `join`/`leave` events to the other members (only with `presence`).
    pub join_leave: bool,
    /// Clients may publish.
    pub client_publish: bool,
    /// A client's subscribe asks the subscribe hook first.
    pub subscribe_hook: bool,
    /// A client's publish asks the publish hook first.
    pub publish_hook: bool,
}

impl HubConfig {
    /// The options for `channel`: the longest matching pattern's, over the
    /// hub's defaults.
    pub fn policy(&self, channel: &str) -> ChannelPolicy {
        let options = self
            .channels
            .iter()
            .filter(|(pattern, _)| pattern_matches(pattern, channel))
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(_, o)| o.clone())
            .unwrap_or_default();
        let presence = options.presence.unwrap_or(true);
        ChannelPolicy {
            history_size: options.history_size.unwrap_or(self.history_size),
            history_ttl: options
                .history_ttl
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(self.history_ttl),
            presence,
            join_leave: presence && options.join_leave.unwrap_or(false),
            client_publish: options.client_publish.unwrap_or(true),
            subscribe_hook: options.subscribe_hook.unwrap_or(false),
            publish_hook: options.publish_hook.unwrap_or(false),
        }
    }
}

/// The backend hooks: `[hooks]` in the config file (docs/hooks.md).
///
/// A hook is on when its URL is set; the subscribe and publish hooks then
/// run on the channels whose `[channels."pattern"]` table says
/// `subscribe_hook = true` / `publish_hook = true`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HooksConfig {
    /// Asked before each `/ws` upgrade: may refuse it (an HTTP status, or
    /// a close code right after the upgrade), set the user, subscribe the
    /// client to channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_url: Option<String>,
    /// Asked before each client subscribe on an opted-in channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe_url: Option<String>,
    /// Asked before each client publish on an opted-in channel; may
    /// replace the data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_url: Option<String>,
    /// Seconds a hook's whole exchange (connect, request, answer) may
    /// take; past it the hook has failed (`timeout`).
    pub timeout: f64,
    /// Hook requests in flight on this node, all hooks together; one more
    /// fails at once (`overload`), never waits.
    pub max_in_flight: usize,
    /// Request headers of the `/ws` upgrade sent to the hooks (names,
    /// any case), e.g. `["cookie", "authorization"]`.
    pub forward_headers: Vec<String>,
    /// What a failed hook (backend down, timeout, not 200, an answer that
    /// is not the JSON of docs/hooks.md, overload) does: `false` refuses
    /// (`unavailable`), `true` allows as if the backend had said `{}`.
    pub fail_open: bool,
    /// `fail_open` for the connect hook only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_fail_open: Option<bool>,
    /// `fail_open` for the subscribe hook only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribe_fail_open: Option<bool>,
    /// `fail_open` for the publish hook only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publish_fail_open: Option<bool>,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            connect_url: None,
            subscribe_url: None,
            publish_url: None,
            timeout: 1.0,
            max_in_flight: 256,
            forward_headers: Vec::new(),
            fail_open: false,
            connect_fail_open: None,
            subscribe_fail_open: None,
            publish_fail_open: None,
        }
    }
}

/// The webhook events, in the order of [`WebhooksConfig::events`]' default
/// and of the `name` label of `wsline_webhook_events_total`.
pub const WEBHOOK_EVENTS: [&str; 6] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_connected",
    "client_disconnected",
];

/// The webhooks: `[webhooks]` in the config file (docs/hooks.md#webhooks).
///
/// On when `url` is set: the events named in `events` are POSTed there in
/// batches, signed with `secret`, retried for `retry_window`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Where the batches are POSTed (`http://` or `https://`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The HMAC-SHA256 key of the `X-Wsline-Signature` header; required
    /// with `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The events sent (of [`WEBHOOK_EVENTS`]); all of them by default.
    pub events: Vec<String>,
    /// Events per POST at most.
    pub batch_size: usize,
    /// Seconds an event may wait for others to share its POST.
    pub batch_delay: f64,
    /// Seconds one POST (connect, request, answer) may take.
    pub timeout: f64,
    /// Seconds a batch is retried (with exponential backoff) before its
    /// events are dropped.
    pub retry_window: f64,
    /// Events waiting to be sent on this node at most; more are dropped
    /// (counted, logged).
    pub queue_size: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            url: None,
            secret: None,
            events: WEBHOOK_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            batch_size: 100,
            batch_delay: 0.05,
            timeout: 5.0,
            retry_window: 60.0,
            queue_size: 10_000,
        }
    }
}

impl HubConfig {
    /// The `[webhooks]` table: a URL that parses, a secret with it, known
    /// event names, bounds above 0.
    fn check_webhooks(&self) -> Result<(), String> {
        let w = &self.webhooks;
        let Some(url) = &w.url else {
            return Ok(());
        };
        crate::http_client::Endpoint::new(url).map_err(|e| format!("webhooks.url {url:?}: {e}"))?;
        if w.secret.as_deref().is_none_or(str::is_empty) {
            return Err("webhooks.url is set but webhooks.secret is not: add a secret the receiver checks the signature with".into());
        }
        if let Some(bad) = w
            .events
            .iter()
            .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
        {
            return Err(format!(
                "webhooks.events: {bad:?} is not one of {}",
                WEBHOOK_EVENTS.join(", ")
            ));
        }
        for (key, secs, min) in [
            ("batch_delay", w.batch_delay, 0.0),
            ("timeout", w.timeout, f64::MIN_POSITIVE),
            ("retry_window", w.retry_window, 0.0),
        ] {
            if !(secs.is_finite() && secs >= min && secs <= 86_400.0) {
                return Err(format!(
                    "webhooks.{key} must be {} seconds (and at most a day), not {secs}",
                    if min > 0.0 {
                        "more than 0"
                    } else {
                        "0 or more"
                    }
                ));
            }
        }
        if w.batch_size == 0 || w.queue_size == 0 {
            return Err("webhooks.batch_size and webhooks.queue_size must be at least 1".into());
        }
        Ok(())
    }
}

/// The channel pattern of the demo chat at `/` (`chat.ROOM`), which shows
/// who joins and leaves: the one entry of the default
/// [`HubConfig::channels`], with `join_leave = true`. A config file with
/// `[channels."pattern"]` tables replaces it.
pub const DEMO_CHANNELS: &str = "chat.*";

/// The default [`HubConfig::channels`]: [`DEMO_CHANNELS`] with join/leave
/// events, everything else without.
pub fn default_channels() -> BTreeMap<String, ChannelOptions> {
    BTreeMap::from([(
        DEMO_CHANNELS.to_owned(),
        ChannelOptions {
            join_leave: Some(true),
            ..ChannelOptions::default()
        },
    )])
}

/// Whether `pattern` matches the whole of `name`; `*` matches any run of
/// characters (`:` and `.` included), everything else itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    // Iterative glob with backtracking to the last star.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether a channel name is valid: 1–255 of `A-Za-z0-9_-:.@`.
pub fn valid_channel(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.' | b'@'))
}

impl FileConfig {
    /// Parses the TOML text of a config file.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_webhooks(toml: &str) -> Result<HubConfig, String> {
        HubConfig::merge(&Flags::default(), FileConfig::parse(toml)?)
    }

    #[test]
    fn webhooks_are_checked_and_their_secret_is_masked() {
        let c = with_webhooks(
            "[webhooks]\nurl = \"http://127.0.0.1:9/h\"\nsecret = \"s3cr3t\"\nevents = [\"channel_vacated\"]\n",
        )
        .unwrap();
        assert_eq!(c.webhooks.events, ["channel_vacated"]);
        assert_eq!(c.webhooks.batch_size, 100, "defaults for the rest");
        let shown = c.to_toml_masked();
        assert!(
            shown.contains("[webhooks]") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        let back = with_webhooks(&shown).unwrap();
        assert_eq!(back.webhooks.url, c.webhooks.url);
        for (toml, why) in [
            ("[webhooks]\nurl = \"http://h/\"\n", "secret"),
            (
                "[webhooks]\nurl = \"ftp://h/\"\nsecret = \"s\"\n",
                "webhooks.url",
            ),
            (
                "[webhooks]\nurl = \"http://h/\"\nsecret = \"s\"\nevents = [\"joined\"]\n",
                "\"joined\" is not one of",
            ),
            (
                "[webhooks]\nurl = \"http://h/\"\nsecret = \"s\"\nqueue_size = 0\n",
                "queue_size",
            ),
            (
                "[webhooks]\nurl = \"http://h/\"\nsecret = \"s\"\ntimeout = 0\n",
                "webhooks.timeout",
            ),
            (
                "[webhooks]\nurl = \"http://h/\"\nsecrets = \"s\"\n",
                "unknown field",
            ),
        ] {
            let e = with_webhooks(toml).unwrap_err();
            assert!(e.contains(why), "{toml:?}: {e}");
        }
        assert!(
            with_webhooks("[webhooks]\nbatch_size = 0\n").is_ok(),
            "off: unchecked"
        );
    }

    #[test]
    fn a_password_in_a_url_is_masked_and_nothing_else() {
        assert_eq!(
            mask_password("redis://u:p%40ss@h:6379/0"),
            "redis://u:********@h:6379/0"
        );
        assert_eq!(mask_password("redis://:pw@h"), "redis://:********@h");
        assert_eq!(mask_password("redis://h:6379"), "redis://h:6379");
        assert_eq!(mask_password("redis://user@h"), "redis://user@h");
        assert_eq!(mask_password("redis://h/a@b"), "redis://h/a@b");
        assert_eq!(mask_password("not a url"), "not a url");
    }

    #[test]
    fn patterns_match_whole_names() {
        assert!(pattern_matches("chat:*", "chat:lobby"));
        assert!(pattern_matches("chat:*", "chat:a.b:c"));
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("a*b*c", "aXXbYYc"));
        assert!(!pattern_matches("chat:*", "news:chat:x"));
        assert!(!pattern_matches("chat", "chat:x"));
        assert!(pattern_matches("exact", "exact"));
    }

    #[test]
    fn longest_pattern_wins() {
        let file = FileConfig::parse(
            "history_size = 7\n[channels.\"chat:*\"]\nhistory_size = 50\n[channels.\"chat:vip:*\"]\nclient_publish = false\npresence = false\n",
        )
        .unwrap();
        let config = HubConfig {
            history_size: file.history_size.unwrap(),
            channels: file.channels,
            ..HubConfig::default()
        };
        assert_eq!(config.policy("chat:lobby").history_size, 50);
        let vip = config.policy("chat:vip:room");
        assert!(!vip.client_publish && !vip.presence);
        assert_eq!(vip.history_size, 7, "unset keys fall back to the hub's");
        assert_eq!(config.policy("news").history_size, 7);
    }

    #[test]
    fn join_leave_is_opt_in_per_pattern_and_needs_presence() {
        let file = FileConfig::parse(
            "[channels.\"room:*\"]\njoin_leave = true\n\
             [channels.\"room:quiet:*\"]\nhistory_size = 5\n\
             [channels.\"room:ghost:*\"]\njoin_leave = true\npresence = false\n\
             [channels.\"feed:*\"]\njoin_leave = false\n",
        )
        .unwrap();
        let config = HubConfig {
            channels: file.channels,
            ..HubConfig::default()
        };
        let on = config.policy("room:lobby");
        assert!(on.presence && on.join_leave);
        // Off by default: on unmatched channels, and where the longest
        // matching pattern leaves the key unset (no inheritance).
        let off = config.policy("news");
        assert!(off.presence && !off.join_leave, "{off:?}");
        let quiet = config.policy("room:quiet:1");
        assert!(quiet.presence && !quiet.join_leave, "{quiet:?}");
        assert!(!config.policy("feed:x").join_leave);
        // Events announce members: none without presence.
        let ghost = config.policy("room:ghost:1");
        assert!(!ghost.presence && !ghost.join_leave, "{ghost:?}");
    }

    #[test]
    fn the_default_config_sends_join_leave_only_on_the_demo_channels() {
        let config = HubConfig::default();
        let demo = config.policy("chat.general");
        assert!(demo.presence && demo.join_leave, "{demo:?}");
        for other in ["room", "chat:lobby", "chatx", "news.chat.x"] {
            let p = config.policy(other);
            assert!(p.presence && !p.join_leave, "{other}: {p:?}");
        }
        assert!(
            FileConfig::parse("join_leave = true").is_err(),
            "per channel only"
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(FileConfig::parse("histroy_size = 1").is_err());
    }

    #[test]
    fn engine_keys_parse() {
        let file = FileConfig::parse(
            "engine = \"redis\"\nredis_url = \"redis://h:1\"\npresence_timeout = 2.5\n",
        )
        .unwrap();
        assert_eq!(file.engine.as_deref(), Some("redis"));
        assert_eq!(file.redis_url.as_deref(), Some("redis://h:1"));
        assert_eq!(
            file.presence_timeout,
            Some(crate::settings::Seconds(Duration::from_millis(2500)))
        );
        assert_eq!(HubConfig::default().engine, EngineKind::Memory);
    }

    /// The value of `setting`'s default as a TOML value.
    fn toml_value(setting: &Setting) -> String {
        let text = setting.default.to_string();
        let one = if text.parse::<f64>().is_ok() {
            text
        } else {
            format!("{text:?}")
        };
        if setting.repeatable {
            format!("[{one}]")
        } else {
            one
        }
    }

    #[test]
    fn every_setting_has_a_flag_a_toml_key_and_a_docs_row() {
        let table = settings();
        let docs = std::fs::read_to_string(docs_path()).expect("docs/hub.md");
        let mut keys = std::collections::HashSet::new();
        for s in &table {
            assert!(keys.insert(s.key), "{} twice", s.key);
            assert_eq!(s.flag(), s.key.replace('_', "-"));
            assert!(!s.help.is_empty() && !s.docs.is_empty(), "{}", s.key);
            // The key is one the file takes, with a value of its type.
            let line = format!("{} = {}", s.key, toml_value(s));
            let file = FileConfig::parse(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
            // Alone, these are refused: redis_url needs engine = "redis",
            // jwt_issuer and jwt_audience need a key setting, fsync needs
            // data_dir, tls_cert and tls_key need each other, and
            // jwks_url's default shown ("none") is not a URL.
            if ![
                "redis_url",
                "jwt_issuer",
                "jwt_audience",
                "jwks_url",
                "fsync",
                "tls_cert",
                "tls_key",
            ]
            .contains(&s.key)
            {
                HubConfig::merge(&Flags::default(), file).unwrap_or_else(|e| panic!("{line}: {e}"));
            }
            let row = format!("| `--{} {}`", s.flag(), s.value_name);
            assert!(docs.contains(&row), "docs/hub.md has no row {row}");
        }
        assert!(keys.contains("handshake_timeout"));
    }

    #[test]
    fn flags_win_over_the_file_over_the_defaults() {
        let file = FileConfig::parse(
            "history_size = 7\nmax_handshakes = 9\nhandshake_timeout = 2.5\nmax_message_size = 2000\n",
        )
        .unwrap();
        let flags = Flags {
            max_handshakes: Some(11),
            ping_interval: Some(crate::settings::Seconds(Duration::ZERO)),
            ..Flags::default()
        };
        let c = HubConfig::merge(&flags, file).unwrap();
        assert_eq!(c.history_size, 7, "the file over the default");
        assert_eq!(c.server.limits.max_handshakes, 11, "the flag over the file");
        assert_eq!(c.server.handshake_timeout, Duration::from_millis(2500));
        assert_eq!(c.server.protocol.ping_interval, None, "0 disables");
        assert_eq!(c.server.protocol.max_message_size, 2000);
        assert_eq!(c.server.protocol.max_frame_size, 2000);
        let d = HubConfig::default();
        assert_eq!(c.max_queue, d.max_queue);
        assert_eq!(
            c.server.limits.max_connecting_per_ip,
            wsline::Limits::default().max_connecting_per_ip
        );
        assert_eq!(
            d.server.handshake_timeout,
            wsline::ServerConfig::default().handshake_timeout
        );
        assert_eq!(d.server.protocol.max_frame_size, 65536);
        assert!(HubConfig::merge(
            &Flags::default(),
            FileConfig::parse("handshake_timeout = 0").unwrap()
        )
        .is_err());
        assert!(FileConfig::parse("handshake_timeout = -1").is_err());
    }

    #[test]
    fn token_settings_are_checked_together() {
        let merge =
            |text: &str| HubConfig::merge(&Flags::default(), FileConfig::parse(text).unwrap());
        let err = merge("jwt_audience = \"hub\"").unwrap_err();
        assert!(err.contains("--jwks-url"), "{err}");
        assert!(merge("jwt_issuer = \"i\"").is_err());
        let err = merge("jwks_url = \"ftp://idp/jwks\"").unwrap_err();
        assert!(err.contains("https://"), "{err}");
        assert!(merge("jwks_url = \"https://idp/jwks\"\njwks_refresh = 0").is_err());
        let c = merge(
            "jwks_url = \"https://idp/jwks\"\njwt_issuer = \"i\"\njwt_audience = \"a\"\njwks_refresh = 60",
        )
        .unwrap();
        assert_eq!(c.jwks_refresh, Duration::from_secs(60));
        let c = merge("jwt_public_key = [\"a.pem\", \"b.pem\"]\njwt_audience = \"a\"").unwrap();
        assert_eq!(c.jwt_public_key, ["a.pem", "b.pem"]);
    }

    #[test]
    fn hooks_are_read_from_their_table_and_checked_with_the_channels() {
        let merge =
            |text: &str| HubConfig::merge(&Flags::default(), FileConfig::parse(text).unwrap());
        let c = merge(
            "[hooks]\nconnect_url = \"http://127.0.0.1:9000/connect\"\n\
             subscribe_url = \"https://app.example/hooks/subscribe\"\n\
             timeout = 0.5\nmax_in_flight = 8\nforward_headers = [\"cookie\"]\n\
             subscribe_fail_open = true\n\
             [channels.\"private:*\"]\nsubscribe_hook = true\n",
        )
        .unwrap();
        assert_eq!(c.hooks.timeout, 0.5);
        assert_eq!(c.hooks.max_in_flight, 8);
        assert_eq!(c.hooks.subscribe_fail_open, Some(true));
        assert!(!c.hooks.fail_open, "fail closed by default");
        assert!(c.policy("private:x").subscribe_hook);
        assert!(!c.policy("public").subscribe_hook && !c.policy("private:x").publish_hook);
        // --print-config shows the table, and reads back the same.
        let text = c.to_toml_masked();
        assert!(text.contains("[hooks]"), "{text}");
        let again = merge(&text).unwrap();
        assert_eq!(again.hooks, c.hooks);

        let err = merge("[hooks]\npublish_url = \"http://h/p\"\n").unwrap_err();
        assert!(err.contains("publish_hook = true"), "{err}");
        let err = merge("[channels.\"a\"]\nsubscribe_hook = true\n").unwrap_err();
        assert!(err.contains("subscribe_url"), "{err}");
        assert!(merge("[hooks]\nconnect_url = \"ftp://h\"\n").is_err());
        assert!(merge("[hooks]\ntimeout = 0\n").is_err());
        assert!(merge("[hooks]\nmax_in_flight = 0\n").is_err());
        assert!(FileConfig::parse("[hooks]\nconect_url = \"http://h\"\n").is_err());
    }

    fn docs_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/hub.md")
    }

    /// docs/hub.md's configuration table is [`settings`] rendered;
    /// `WSLINE_BLESS=1` rewrites it.
    #[test]
    fn docs_table_is_generated_from_the_settings() {
        use crate::settings::{docs_table, DOCS_TABLE_END, DOCS_TABLE_START};
        let path = docs_path();
        let docs = std::fs::read_to_string(&path).expect("docs/hub.md");
        let (before, rest) = docs
            .split_once(&format!("{DOCS_TABLE_START}\n"))
            .expect("docs/hub.md has the settings table's start marker");
        let (table, after) = rest
            .split_once(DOCS_TABLE_END)
            .expect("docs/hub.md has the settings table's end marker");
        let generated = docs_table(&settings());
        if table == generated {
            return;
        }
        if std::env::var_os("WSLINE_BLESS").is_some() {
            let text = format!("{before}{DOCS_TABLE_START}\n{generated}{DOCS_TABLE_END}{after}");
            std::fs::write(&path, text).expect("write docs/hub.md");
            return;
        }
        panic!(
            "docs/hub.md's settings table differs from the table in crates/hub/src/config.rs; \
             regenerate it with `WSLINE_BLESS=1 cargo test -p wsline-hub --lib docs_table`\n\
             --- generated:\n{generated}"
        );
    }

    #[test]
    fn channel_names() {
        assert!(valid_channel("chat:lobby-1_a.b@c"));
        assert!(!valid_channel(""));
        assert!(!valid_channel("has space"));
        assert!(!valid_channel(&"x".repeat(256)));
    }
}
