//! The hub's configuration: defaults, the TOML file, per-channel options
//! by pattern.
//!
//! Owns what each setting means and its default; the command line layer
//! (`wsline serve`) merges flags over the file over these defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::any_engine::EngineKind;

/// Every setting of the hub, with the defaults of `wsline serve`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubConfig {
    /// Where to listen (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Guards `/api/*` with `Authorization: Bearer KEY`; without one those
    /// endpoints answer only loopback clients.
    pub api_key: Option<String>,
    /// HS256 secret: clients then need `/ws?token=JWT`.
    pub jwt_secret: Option<String>,
    /// Allowed Origins for `/ws` (empty: any).
    pub allow_origin: Vec<String>,
    /// Messages kept per channel for recovery (default 100).
    pub history_size: usize,
    /// How long messages stay in history (default 300 s).
    pub history_ttl: Duration,
    /// Largest client message (default 65536); larger → 1009.
    pub max_message_size: usize,
    /// Publishes per second per connection (bucket of 2× this).
    pub publish_rate: u32,
    /// Subscriptions per connection (default 128).
    pub max_subscriptions: usize,
    /// Open WebSocket connections (default 100000); more get 503.
    pub max_connections: usize,
    /// Per-connection outgoing queue in bytes (default 1 MiB); a client
    /// past it is a slow consumer and is closed with 4008.
    pub max_queue: usize,
    /// Keepalive ping interval (`None`: off).
    pub ping_interval: Option<Duration>,
    /// Keepalive pong timeout.
    pub ping_timeout: Option<Duration>,
    /// Closing handshake timeout, also the shutdown grace period.
    pub close_timeout: Duration,
    /// TCP connections in their opening handshake or an HTTP request
    /// (default 4096); more are refused at once with 503. One address may
    /// hold half of them.
    pub max_handshakes: usize,
    /// Stalled handshakes (in progress for over a second) one IP address
    /// or IPv6 /64 may hold (default 64; 0: no per-address rule, see
    /// `wsline::Limits::max_connecting_per_ip`).
    pub max_connecting_per_ip: usize,
    /// A client that takes none of its pending output for this long is
    /// dropped (default 30 s; `None`: never).
    pub write_timeout: Option<Duration>,
    /// A client that sends no message for this long is closed with 1001
    /// (default `None`: never).
    pub idle_timeout: Option<Duration>,
    /// Per-channel options by pattern (`*` matches any run of characters);
    /// the longest matching pattern wins. By default one entry,
    /// [`DEMO_CHANNELS`] with `join_leave`, for the demo chat at `/`.
    pub channels: BTreeMap<String, ChannelOptions>,
    /// Where offsets, history, presence and delivery live: `memory` (one
    /// process, the default) or `redis` (several nodes, docs/scaling.md).
    pub engine: EngineKind,
    /// The Redis server of the `redis` engine (default
    /// `redis://127.0.0.1:6379`).
    pub redis_url: String,
    /// Redis engine: how long a member stays listed without its node
    /// refreshing it (default 30 s), so a killed node's members vanish
    /// within this; nodes refresh every third of it.
    pub presence_timeout: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            api_key: None,
            jwt_secret: None,
            allow_origin: Vec::new(),
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            max_message_size: 65536,
            publish_rate: 50,
            max_subscriptions: 128,
            max_connections: 100_000,
            max_queue: 1 << 20,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Some(Duration::from_secs(20)),
            close_timeout: Duration::from_secs(10),
            max_handshakes: wsline::Limits::default().max_handshakes,
            max_connecting_per_ip: wsline::Limits::default().max_connecting_per_ip,
            write_timeout: Some(Duration::from_secs(30)),
            idle_timeout: None,
            channels: default_channels(),
            engine: EngineKind::Memory,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            presence_timeout: Duration::from_secs(30),
        }
    }
}

/// Options of the channels a pattern matches. Unset keys take the hub's
/// defaults.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelOptions {
    /// Messages kept for recovery.
    pub history_size: Option<usize>,
    /// Seconds a message stays in history.
    pub history_ttl: Option<f64>,
    /// Whether members are tracked and presence queries answered (default
    /// true).
    pub presence: Option<bool>,
    /// Whether each subscribe and unsubscribe is announced to the other
    /// members with a `join` or `leave` event (default false: in a channel
    /// of N members that is N events per subscribe). Needs `presence`.
    pub join_leave: Option<bool>,
    /// Whether clients may publish (default true; the HTTP API always may).
    pub client_publish: Option<bool>,
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
        }
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

/// The TOML file: the same keys as the flags (with `_`), plus
/// `[channels."pattern"]` tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `listen`
    pub listen: Option<String>,
    /// `api_key`
    pub api_key: Option<String>,
    /// `jwt_secret`
    pub jwt_secret: Option<String>,
    /// `allow_origin`
    pub allow_origin: Option<Vec<String>>,
    /// `history_size`
    pub history_size: Option<usize>,
    /// `history_ttl` (seconds)
    pub history_ttl: Option<f64>,
    /// `max_message_size`
    pub max_message_size: Option<usize>,
    /// `publish_rate`
    pub publish_rate: Option<u32>,
    /// `max_subscriptions`
    pub max_subscriptions: Option<usize>,
    /// `max_connections`
    pub max_connections: Option<usize>,
    /// `max_queue`
    pub max_queue: Option<usize>,
    /// `ping_interval` (seconds, 0 disables)
    pub ping_interval: Option<f64>,
    /// `ping_timeout` (seconds)
    pub ping_timeout: Option<f64>,
    /// `close_timeout` (seconds)
    pub close_timeout: Option<f64>,
    /// `max_handshakes`
    pub max_handshakes: Option<usize>,
    /// `max_connecting_per_ip` (0: no per-address rule)
    pub max_connecting_per_ip: Option<usize>,
    /// `write_timeout` (seconds, 0: never)
    pub write_timeout: Option<f64>,
    /// `idle_timeout` (seconds, 0: never)
    pub idle_timeout: Option<f64>,
    /// `log_format`: "plain" or "json"
    pub log_format: Option<String>,
    /// `engine`: "memory" or "redis"
    pub engine: Option<String>,
    /// `redis_url`
    pub redis_url: Option<String>,
    /// `presence_timeout` (seconds)
    pub presence_timeout: Option<f64>,
    /// Per-pattern channel options.
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelOptions>,
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
        assert_eq!(file.presence_timeout, Some(2.5));
        assert_eq!(HubConfig::default().engine, EngineKind::Memory);
    }

    #[test]
    fn channel_names() {
        assert!(valid_channel("chat:lobby-1_a.b@c"));
        assert!(!valid_channel(""));
        assert!(!valid_channel("has space"));
        assert!(!valid_channel(&"x".repeat(256)));
    }
}
