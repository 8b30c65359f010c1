//! What the two peer hubs share: the subset of the wsline hub protocol
//! (docs/protocol.md) that bench/fanout.sh needs, and the channels.
//!
//! Owns the idiomatic tokio shape of a hub: one `tokio::sync::broadcast`
//! per channel, fed the message JSON serialized once per publish (a cheap
//! clone per subscriber); each connection frames and writes what it
//! receives itself, as the two libraries do. Supported requests:
//! `subscribe` (one channel per connection) → `subscribed`, `publish` →
//! `published` and `{"op":"message",...}` to every subscriber, `ping` →
//! `pong`; anything else → `{"op":"error",...}`. A subscriber that lags
//! behind the broadcast's capacity loses messages: they are counted and
//! reported on stderr (the benchmark counts them too, from the gaps).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::broadcast;

/// Messages a channel's broadcast holds: far more than a subscriber that
/// keeps up ever has waiting (the benchmark keeps at most a few hundred
/// publishes in flight), so only one that does not keep up lags.
pub const CAPACITY: usize = 65536;

static LOST: AtomicU64 = AtomicU64::new(0);

/// Counts `n` deliveries lost by a lagging subscriber and says so on stderr.
pub fn lagged(n: u64) {
    let total = LOST.fetch_add(n, Relaxed) + n;
    eprintln!("lagged: {n} messages lost by a subscriber ({total} in all)");
}

struct Channel<T> {
    offset: u64,
    tx: broadcast::Sender<T>,
}

/// The channels of one hub process; `T` is the shared message (the
/// library's cheaply cloned text type).
pub struct Hub<T> {
    channels: Mutex<HashMap<String, Channel<T>>>,
    next_client: AtomicU64,
}

/// What a connection does after one request.
pub struct Response<T> {
    /// The reply to send to the requester.
    pub reply: String,
    /// A new subscription to start receiving from.
    pub subscribed: Option<broadcast::Receiver<T>>,
}

impl<T: Clone + From<String>> Hub<T> {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            next_client: AtomicU64::new(1),
        })
    }

    /// A new client ID and the `welcome` message for it.
    pub fn welcome(&self) -> (String, String) {
        let client = format!("c{}", self.next_client.fetch_add(1, Relaxed));
        let welcome = json!({"op": "welcome", "client": client, "user": null}).to_string();
        (client, welcome)
    }

    /// Handles one text message from `client`; `subscribed_already` says
    /// whether the connection has its one subscription.
    pub fn handle(&self, client: &str, text: &str, subscribed_already: bool) -> Response<T> {
        let reply = |reply: String| Response {
            reply,
            subscribed: None,
        };
        let Ok(Value::Object(req)) = serde_json::from_str::<Value>(text) else {
            return reply(error(&Value::Null, "bad_request", "not a JSON object"));
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let channel = req.get("channel").and_then(Value::as_str);
        match (req.get("op").and_then(Value::as_str), channel) {
            (Some("ping"), _) => reply(with_id(json!({"op": "pong"}), &id)),
            (Some("subscribe"), Some(_)) if subscribed_already => reply(error(
                &id,
                "limit_exceeded",
                "this peer hub takes one subscription per connection",
            )),
            (Some("subscribe"), Some(channel)) => {
                let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
                let ch = channels
                    .entry(channel.to_owned())
                    .or_insert_with(|| Channel {
                        offset: 0,
                        tx: broadcast::channel(CAPACITY).0,
                    });
                Response {
                    reply: with_id(
                        json!({"op": "subscribed", "channel": channel, "offset": ch.offset,
                               "epoch": "peer", "recovered": false}),
                        &id,
                    ),
                    subscribed: Some(ch.tx.subscribe()),
                }
            }
            (Some("publish"), Some(channel)) => {
                let data = req.get("data").unwrap_or(&Value::Null);
                let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
                let offset = match channels.get_mut(channel) {
                    Some(ch) => {
                        ch.offset += 1;
                        // Serialized once; every subscriber gets a clone.
                        let message = json!({"op": "message", "channel": channel,
                            "offset": ch.offset, "data": data, "from": client})
                        .to_string();
                        let _ = ch.tx.send(T::from(message));
                        ch.offset
                    }
                    // Nobody listens: offsets are only kept while someone does.
                    None => 0,
                };
                reply(with_id(
                    json!({"op": "published", "channel": channel, "offset": offset}),
                    &id,
                ))
            }
            _ => reply(error(&id, "bad_request", "unsupported request")),
        }
    }
}

fn with_id(mut v: Value, id: &Value) -> String {
    if !id.is_null() {
        v["id"] = id.clone();
    }
    v.to_string()
}

fn error(id: &Value, code: &str, message: &str) -> String {
    with_id(json!({"op": "error", "code": code, "message": message}), id)
}
