//! Message-queue bridges: a broker's messages published into channels,
//! channels' publications mirrored out to the broker (docs/bridges.md).
//!
//! Owns what every broker shares: the `[bridge]` table of the config file
//! ([`BridgeConfig`]), the name templates ([`Template`]), the outbound
//! [`Tap`] the engine feeds with every publication this node accepts, the
//! loop guard (a bridge never mirrors out what a bridge published in) and
//! the counters of `wsline_bridge_messages_total`. Each broker is a
//! module of its own behind a cargo feature (`nats`: [`nats`]), which
//! reads its entries of [`BridgeConfig`], publishes through the engine
//! like any publisher and drains its [`Outbound`] queue; nothing here
//! knows a broker's protocol.

#[cfg(feature = "nats")]
mod nats;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::config::pattern_matches;
use crate::metrics::Metrics;

/// The `from` of every publication a bridge makes starts with this (then
/// the broker's name, e.g. `nats:`): the outbound [`Tap`] skips them, so a
/// channel both fed in and mirrored out never echoes.
pub const FROM_PREFIX: &str = "bridge:";

/// `[bridge]` in the config file: the bridges to start, by broker.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// `[[bridge.nats]]` entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nats: Vec<NatsBridgeConfig>,
}

/// One `[[bridge.nats]]` entry: a connection to NATS, inbound subjects
/// and/or outbound channels.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsBridgeConfig {
    /// The entry's name, in logs and in the `bridge` label of the metrics
    /// (default `nats` then its position, from 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// NATS server URLs (`nats://host:port`, `tls://…`); the client moves
    /// to another on failure.
    pub servers: Vec<String>,
    /// Inbound: the subjects to subscribe to (`*` one token, `>` the
    /// rest). With `stream`, at most one: the consumer's filter (none:
    /// the whole stream).
    pub subjects: Vec<String>,
    /// Inbound: the channel each message goes to, from its subject
    /// (`{subject}`, `{1}`, `{2}`… its `.`-separated tokens).
    pub channel: String,
    /// Inbound through JetStream: the stream to read (it must exist).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// JetStream: the durable pull consumer's name (created if missing;
    /// default `wsline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durable: Option<String>,
    /// JetStream: seconds before a message not yet acknowledged (the hub
    /// was killed before it stored it) is delivered again.
    pub ack_wait: f64,
    /// Outbound: channel patterns (`*` any run of characters) whose
    /// publications are sent to NATS.
    pub channels: Vec<String>,
    /// Outbound: the subject each publication is sent to, from its
    /// channel (`{channel}`, `{1}`, `{2}`… its `.`-separated tokens).
    pub subject: String,
    /// Messages waiting between NATS and the engine, each way; past it
    /// they are dropped (counted, logged).
    pub max_pending: usize,
}

impl Default for NatsBridgeConfig {
    fn default() -> Self {
        Self {
            name: None,
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            subjects: Vec::new(),
            channel: "{subject}".to_owned(),
            stream: None,
            durable: None,
            ack_wait: 30.0,
            channels: Vec::new(),
            subject: "{channel}".to_owned(),
            max_pending: 1024,
        }
    }
}

impl BridgeConfig {
    /// Checks every entry (called with the other checks of the config).
    pub(crate) fn check(&self) -> Result<(), String> {
        if !self.nats.is_empty() && !cfg!(feature = "nats") {
            return Err(
                "[[bridge.nats]] is set but this build has no NATS bridge: build wsline with the `nats` feature"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, entry) in self.nats.iter().enumerate() {
            let name = entry.name(i);
            let e = |m: String| format!("bridge.nats {name:?}: {m}");
            if !names.insert(name.clone()) {
                return Err(e("two entries have this name".into()));
            }
            if !(1..=64).contains(&name.len())
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(e("name must be 1-64 of A-Za-z0-9_-.".into()));
            }
            if entry.servers.is_empty() {
                return Err(e("servers is empty: add a nats:// URL".into()));
            }
            #[cfg(feature = "nats")]
            nats::check_servers(&entry.servers).map_err(e)?;
            if entry.subjects.is_empty() && entry.channels.is_empty() && entry.stream.is_none() {
                return Err(e(
                    "nothing to bridge: add subjects (inbound), stream (JetStream) or channels (outbound)"
                        .into(),
                ));
            }
            Template::parse(&entry.channel, "subject").map_err(|m| e(format!("channel: {m}")))?;
            Template::parse(&entry.subject, "channel").map_err(|m| e(format!("subject: {m}")))?;
            if entry.stream.is_some() && entry.subjects.len() > 1 {
                return Err(e(
                    "a JetStream entry takes at most one subject (its consumer's filter): add an entry per subject"
                        .into(),
                ));
            }
            if entry.stream.is_none() && entry.durable.is_some() {
                return Err(e("durable is set but stream is not: add stream".into()));
            }
            if !(entry.ack_wait.is_finite() && entry.ack_wait >= 0.1 && entry.ack_wait <= 3600.0) {
                return Err(e(format!(
                    "ack_wait must be between 0.1 and 3600 seconds, not {}",
                    entry.ack_wait
                )));
            }
            if entry.max_pending == 0 {
                return Err(e("max_pending must be at least 1".into()));
            }
        }
        Ok(())
    }
}

impl NatsBridgeConfig {
    /// The entry's name: `name`, or `nats` and its 1-based position.
    pub fn name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("nats{}", index + 1))
    }
}

/// A name built from another: literal text and `{whole}` / `{N}`
/// placeholders (`{subject}` or `{channel}`, and the Nth `.`-separated
/// token of it, from 1). `{{` and `}}` are literal braces.
#[derive(Clone, Debug, PartialEq)]
pub struct Template(Vec<Part>);

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Text(String),
    Whole,
    Token(usize),
}

impl Template {
    /// Parses `text`, whose whole-name placeholder is `{whole}`.
    pub fn parse(text: &str, whole: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(r) = rest.strip_prefix("{{") {
                literal.push('{');
                rest = r;
            } else if let Some(r) = rest.strip_prefix("}}") {
                literal.push('}');
                rest = r;
            } else if let Some(r) = rest.strip_prefix('{') {
                let Some((name, r)) = r.split_once('}') else {
                    return Err(format!("{text:?}: a {{ without its }}"));
                };
                let part = if name == whole {
                    Part::Whole
                } else {
                    match name.parse::<usize>() {
                        Ok(n) if n >= 1 => Part::Token(n),
                        _ => {
                            return Err(format!(
                                "{text:?}: unknown placeholder {{{name}}} (use {{{whole}}} or {{1}}, {{2}}…)"
                            ))
                        }
                    }
                };
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(part);
                rest = r;
            } else if c == '}' {
                return Err(format!(
                    "{text:?}: a }} without its {{ (write }}}} for one)"
                ));
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        if parts.is_empty() {
            return Err("empty template".into());
        }
        Ok(Self(parts))
    }

    /// The name for `from`; None when a `{N}` is past its last token.
    pub fn render(&self, from: &str) -> Option<String> {
        let mut out = String::with_capacity(from.len() + 16);
        for part in &self.0 {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Whole => out.push_str(from),
                Part::Token(n) => out.push_str(from.split('.').nth(n - 1)?),
            }
        }
        Some(out)
    }
}

/// Payload bytes from a broker as publication data: JSON as it is, other
/// UTF-8 text as a JSON string; None for bytes that are neither.
pub fn payload_to_data(payload: &[u8]) -> Option<Box<RawValue>> {
    let text = std::str::from_utf8(payload).ok()?;
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() {
        return RawValue::from_string(text.trim().to_owned()).ok();
    }
    serde_json::value::to_raw_value(text).ok()
}

/// One publication on its way out to a broker.
#[derive(Debug)]
pub struct Outbound {
    /// Its channel.
    pub channel: String,
    /// Its offset in the channel.
    pub offset: u64,
    /// Its data, the JSON text.
    pub data: Box<RawValue>,
}

/// One outbound route: the channels a bridge mirrors, and its queue.
struct Route {
    bridge: String,
    patterns: Vec<String>,
    queue: mpsc::Sender<Outbound>,
}

/// What the engine tells the bridges of each publication this node
/// accepts (its [`crate::engine::AnyEngine`] calls [`Tap::published`]).
/// Never blocks: a full queue drops the publication (counted, logged).
pub struct Tap {
    routes: Vec<Route>,
    metrics: Arc<Metrics>,
}

impl Tap {
    /// Offers a publication to every route whose patterns match its
    /// channel, unless a bridge published it.
    pub fn published(&self, channel: &str, offset: u64, data: &RawValue, from: Option<&str>) {
        for route in &self.routes {
            if !route.patterns.iter().any(|p| pattern_matches(p, channel)) {
                continue;
            }
            if from.is_some_and(|f| f.starts_with(FROM_PREFIX)) {
                self.metrics.bridge_count(&route.bridge, "out", "echo");
                continue;
            }
            let item = Outbound {
                channel: channel.to_owned(),
                offset,
                data: data.to_owned(),
            };
            if let Err(e) = route.queue.try_send(item) {
                self.metrics.bridge_count(&route.bridge, "out", "dropped");
                if let mpsc::error::TrySendError::Full(_) = e {
                    tracing::warn!(
                        bridge = %route.bridge,
                        channel,
                        offset,
                        "outbound queue full (max_pending): publication not mirrored"
                    );
                }
            }
        }
    }
}

impl Metrics {
    /// Counts one message of `bridge` in `direction` (`in`, `out`) with
    /// `result` (`published`, `duplicate`, `dropped`, `invalid`,
    /// `error`, `echo`).
    pub(crate) fn bridge_count(&self, bridge: &str, direction: &'static str, result: &'static str) {
        let mut map = self
            .bridge_messages
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry((bridge.to_owned(), direction, result))
            .or_default() += 1;
    }
}

/// The running bridges; dropping it stops them.
pub(crate) struct Bridges {
    _tasks: tokio::task::JoinSet<()>,
}

/// Starts the bridges of `hub`'s configuration (inside its runtime) and
/// installs their [`Tap`] in the engine.
pub(crate) fn start(hub: &Arc<crate::Hub>) -> Bridges {
    #[allow(unused_mut)]
    let mut tasks = tokio::task::JoinSet::new();
    #[allow(unused_mut)]
    let mut routes = Vec::new();
    #[cfg(feature = "nats")]
    {
        let hub_id = format!("{:016x}", rand::random::<u64>());
        for (i, entry) in hub.config.bridge.nats.iter().enumerate() {
            nats::start(hub, entry, i, &hub_id, &mut routes, &mut tasks);
        }
    }
    if !routes.is_empty() {
        hub.engine.set_tap(Tap {
            routes,
            metrics: hub.metrics.clone(),
        });
    }
    Bridges { _tasks: tasks }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_the_whole_name_and_its_tokens() {
        let t = Template::parse("news:{subject}", "subject").unwrap();
        assert_eq!(t.render("a.b").as_deref(), Some("news:a.b"));
        let t = Template::parse("room.{2}-{1}{{x}}", "subject").unwrap();
        assert_eq!(t.render("eu.lobby.x").as_deref(), Some("room.lobby-eu{x}"));
        assert_eq!(t.render("eu"), None, "no second token");
        assert!(Template::parse("{channel}", "subject").is_err());
        assert!(Template::parse("{0}", "subject").is_err());
        assert!(Template::parse("a{1", "subject").is_err());
        assert!(Template::parse("a}", "subject").is_err());
        assert!(Template::parse("", "subject").is_err());
    }

    #[test]
    fn payloads_become_json_data() {
        assert_eq!(
            payload_to_data(br#" {"a":1} "#).unwrap().get(),
            r#"{"a":1}"#
        );
        assert_eq!(payload_to_data(b"hello").unwrap().get(), r#""hello""#);
        assert_eq!(payload_to_data(b"").unwrap().get(), r#""""#);
        assert!(payload_to_data(&[0xff, 0xfe]).is_none());
    }

    #[test]
    fn entries_are_checked() {
        let check = |text: &str| {
            let c: BridgeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
            c.check()
        };
        if cfg!(feature = "nats") {
            check("[[nats]]\nsubjects = [\"a.>\"]\nchannel = \"a:{subject}\"\n").unwrap();
            check("[[nats]]\nchannels = [\"x:*\"]\nsubject = \"x.{channel}\"\n").unwrap();
            let err = check("[[nats]]\n").unwrap_err();
            assert!(err.contains("nothing to bridge"), "{err}");
            let err = check("[[nats]]\nsubjects = [\"a\"]\nchannel = \"{nope}\"\n").unwrap_err();
            assert!(err.contains("placeholder"), "{err}");
            let err = check("[[nats]]\nstream = \"S\"\nsubjects = [\"a\", \"b\"]\n").unwrap_err();
            assert!(err.contains("at most one subject"), "{err}");
            let err = check(
                "[[nats]]\nsubjects = [\"a\"]\n[[nats]]\nname = \"nats1\"\nsubjects = [\"b\"]\n",
            )
            .unwrap_err();
            assert!(err.contains("two entries"), "{err}");
        } else {
            let err = check("[[nats]]\nsubjects = [\"a\"]\n").unwrap_err();
            assert!(err.contains("`nats` feature"), "{err}");
        }
        assert!(check("[[nats]]\nsubjcts = [\"a\"]\n").is_err());
    }

    #[test]
    fn the_tap_mirrors_matching_channels_skips_bridged_ones_and_counts_what_a_full_queue_drops() {
        let metrics = Arc::new(Metrics::default());
        let (queue, mut rx) = mpsc::channel(1);
        let tap = Tap {
            routes: vec![Route {
                bridge: "b".into(),
                patterns: vec!["room.*".into()],
                queue,
            }],
            metrics: metrics.clone(),
        };
        let data = RawValue::from_string("[1]".into()).unwrap();
        tap.published("other", 1, &data, None);
        tap.published("room.a", 7, &data, Some("client-1"));
        tap.published("room.a", 8, &data, Some("client-1"));
        tap.published("room.a", 9, &data, Some("bridge:nats:x"));
        let out = rx.try_recv().unwrap();
        assert_eq!(
            (out.channel.as_str(), out.offset, out.data.get()),
            ("room.a", 7, "[1]")
        );
        assert!(rx.try_recv().is_err(), "nothing else queued");
        let counts = metrics.bridge_messages.lock().unwrap().clone();
        assert_eq!(counts.get(&("b".into(), "out", "dropped")), Some(&1));
        assert_eq!(counts.get(&("b".into(), "out", "echo")), Some(&1));
        assert!(metrics.render().contains(
            "wsline_bridge_messages_total{bridge=\"b\",direction=\"out\",result=\"dropped\"} 1"
        ));
    }

    #[cfg(feature = "nats")]
    #[test]
    fn print_config_shows_the_bridges_and_reads_back_the_same() {
        use crate::config::{FileConfig, Flags, HubConfig};
        let merge =
            |text: &str| HubConfig::merge(&Flags::default(), FileConfig::parse(text).unwrap());
        let c = merge(
            "[[bridge.nats]]\nname = \"feed\"\nservers = [\"nats://10.0.0.1:4222\", \"nats://u:secret@h:4222\"]\n\
             stream = \"S\"\nsubjects = [\"a.>\"]\nchannel = \"a:{2}\"\n\
             [[bridge.nats]]\nchannels = [\"x:*\"]\nsubject = \"x.{channel}\"\n",
        )
        .unwrap();
        assert_eq!(c.bridge.nats.len(), 2);
        assert_eq!(c.bridge.nats[0].name(0), "feed");
        assert_eq!(c.bridge.nats[1].name(1), "nats2");
        assert_eq!(
            c.bridge.nats[1].ack_wait, 30.0,
            "defaults for the keys not given"
        );
        let text = c.to_toml_masked();
        assert!(text.contains("[[bridge.nats]]"), "{text}");
        assert!(
            !text.contains("u:secret@") && text.contains("nats://u:********@h:4222"),
            "{text}"
        );
        let mut masked = c.bridge.clone();
        masked.nats[0].servers[1] = "nats://u:********@h:4222".into();
        assert_eq!(merge(&text).unwrap().bridge, masked);
        let err =
            merge("[[bridge.nats]]\nservers = [\"::nope\"]\nsubjects = [\"a\"]\n").unwrap_err();
        assert!(err.contains("not a NATS URL"), "{err}");
    }
}
