//! The engines: offsets, history, presence and delivery of publications.
//!
//! Owns the small interface the rest of the hub uses ([`Engine`]) and its
//! implementations: [`MemoryEngine`] (one process, the default; with
//! `data_dir` its history is kept on disk by `store`),
//! [`RedisEngine`] (several nodes through Redis), and [`AnyEngine`] (the
//! one `wsline serve` runs, chosen by configuration). Both engines share
//! the recovery rule and the paced replay ([`recovery`]). Publications are
//! encoded and framed once, then the same bytes go to every subscriber's
//! [`Outbox`]. A subscribe with `since` replays history at the pace the
//! session pulls it ([`Engine::replay`]).

mod any;
mod memory;
pub mod recovery;
pub mod redis;
mod store;

pub use any::{AnyEngine, EngineKind, SetupError};
pub use memory::MemoryEngine;
pub use redis::{RedisEngine, RedisSetupError};
pub use store::{Fsync, StoreError};

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use wsline_proto::frame::{encode_server_frame, OpCode};

use crate::outbox::Outbox;
use crate::protocol::Member;

/// A text frame, encoded once for every connection that sends it.
pub fn text_frame(json: &str) -> Bytes {
    Bytes::from(encode_server_frame(OpCode::Text, json.as_bytes()))
}

/// One connection's subscription to a channel: its outbox, which also
/// says who it is (one pointer per entry of a subscriber list).
#[derive(Clone)]
pub struct Subscriber {
    /// Where its frames go.
    pub outbox: Arc<Outbox>,
}

impl Subscriber {
    /// Who, for presence.
    pub fn member(&self) -> &Member {
        self.outbox.member()
    }
}

/// What a subscribe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribed {
    /// The channel's latest offset (0 when empty).
    pub offset: u64,
    /// The channel's history epoch.
    pub epoch: String,
    /// Whether every message after `since` is (being) replayed.
    pub recovered: bool,
    /// A replay is in progress: the session pulls it with
    /// [`Engine::replay`] until that returns false.
    pub replaying: bool,
}

/// Why the engine cannot serve a request now (`unavailable`).
#[derive(Debug, thiserror::Error)]
#[error("engine unavailable: {0}")]
pub struct EngineError(pub String);

/// What the hub needs from an engine.
pub trait Engine: Send + Sync + 'static {
    /// Publishes `data` on `channel`: the next offset, kept in history,
    /// delivered to every subscriber. `before_delivery` runs with the
    /// offset before any subscriber gets the message (so a publisher's
    /// reply precedes its own copy). Returns the offset.
    fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        from: Option<&str>,
        before_delivery: impl FnOnce(u64) + Send,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// Subscribes: queues the `subscribed` reply built by `reply`. The
    /// messages after `since` still in history (when `epoch`, if given,
    /// matches) are not queued here: the subscriber is left replaying
    /// (`replaying` in the answer) and the session pulls them with
    /// [`Engine::replay`]; live ones follow, none lost or doubled.
    fn subscribe(
        &self,
        channel: &str,
        subscriber: Subscriber,
        since: Option<u64>,
        epoch: Option<&str>,
        reply: impl FnOnce(&Subscribed) -> Bytes + Send,
    ) -> impl Future<Output = Result<Subscribed, EngineError>> + Send;

    /// Queues the next entries of `client`'s replay on `channel`, within
    /// about `room` bytes (at least one entry). Returns false once the
    /// replay is over (the subscriber is then live) or gone.
    fn replay(&self, channel: &str, client: &str, room: usize)
        -> impl Future<Output = bool> + Send;

    /// Removes a subscription; false if there was none.
    fn unsubscribe(&self, channel: &str, client: &str) -> impl Future<Output = bool> + Send;

    /// The channel's present members.
    fn presence(
        &self,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<Member>, EngineError>> + Send;

    /// Channels with subscribers, and how many.
    fn channels(&self) -> impl Future<Output = Vec<(String, usize)>> + Send;

    /// Whether the engine can serve requests.
    fn is_up(&self) -> bool;
}
