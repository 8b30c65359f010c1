//! The engine a hub runs: the choice between the in-memory engine and the
//! Redis engine, made once from the configuration.
//!
//! Owns [`EngineKind`] (the `engine` setting) and [`AnyEngine`], which
//! forwards every [`Engine`] call to the chosen one. The [`Engine`] trait
//! returns `impl Future`, so it cannot be a trait object; a two-armed enum
//! costs one match per call instead. Every publication this node accepts
//! is also offered to the bridges' tap (`crate::bridge`), the one place
//! all publishers pass. Nothing here knows how either engine works.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::redis::{RedisEngine, RedisSetupError};
use super::{Engine, EngineError, MemoryEngine, Subscribed, Subscriber};
use crate::bridge::Tap;
use crate::config::HubConfig;
use crate::metrics::Metrics;
use crate::protocol::Member;

/// Which engine `wsline serve` runs (`--engine`, key `engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineKind {
    /// One process, nothing external (the default).
    #[default]
    Memory,
    /// Several nodes joined through Redis (`--redis-url`).
    Redis,
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "memory" => Ok(Self::Memory),
            "redis" => Ok(Self::Redis),
            other => Err(format!("engine must be memory or redis, not {other:?}")),
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Memory => "memory",
            Self::Redis => "redis",
        })
    }
}

/// The engine of a running hub, and the bridges' [`Tap`] on what it
/// publishes.
pub struct AnyEngine {
    kind: Kind,
    /// Told of every publication this node accepts, once bridges that
    /// mirror channels out have started (`crate::bridge`).
    tap: OnceLock<Tap>,
}

/// The chosen engine.
enum Kind {
    /// [`MemoryEngine`].
    Memory(MemoryEngine),
    /// [`RedisEngine`].
    Redis(RedisEngine),
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The Redis engine's settings.
    #[error(transparent)]
    Redis(#[from] RedisSetupError),
    /// The memory engine's `data_dir`.
    #[error("data_dir: {0}")]
    Store(#[from] super::StoreError),
}

impl AnyEngine {
    /// The engine `config.engine` names. The Redis engine starts its
    /// background tasks (it must be called inside a tokio runtime) and does
    /// not wait for Redis: until it is reachable the engine is down.
    pub fn new(config: Arc<HubConfig>, metrics: Arc<Metrics>) -> Result<Self, SetupError> {
        let kind = match config.engine {
            EngineKind::Memory => Kind::Memory(MemoryEngine::open(config, metrics)?),
            EngineKind::Redis => Kind::Redis(RedisEngine::start(config, metrics)?),
        };
        Ok(Self {
            kind,
            tap: OnceLock::new(),
        })
    }

    /// Hands the engine the webhooks to emit channel and member events
    /// into (once, before the hub serves).
    pub(crate) fn set_webhooks(&self, webhooks: Arc<crate::webhooks::Webhooks>) {
        match &self.kind {
            Kind::Memory(e) => e.set_webhooks(webhooks),
            Kind::Redis(e) => e.set_webhooks(webhooks),
        }
    }

    /// Installs the bridges' tap (once; a second is ignored).
    pub(crate) fn set_tap(&self, tap: Tap) {
        let _ = self.tap.set(tap);
    }

    /// The memory engine, if that is the one running.
    pub fn memory(&self) -> Option<&MemoryEngine> {
        match &self.kind {
            Kind::Memory(e) => Some(e),
            Kind::Redis(_) => None,
        }
    }

    /// Periodic housekeeping (every 5 s): the memory engine forgets idle
    /// channels; the Redis engine has its own timers and does nothing here.
    pub fn sweep(&self) {
        match &self.kind {
            Kind::Memory(e) => e.sweep(),
            Kind::Redis(_) => {}
        }
    }
}

impl Engine for AnyEngine {
    async fn publish(
        &self,
        channel: &str,
        data: &RawValue,
        from: Option<&str>,
        before_delivery: impl FnOnce(u64) + Send,
    ) -> Result<u64, EngineError> {
        let offset = match &self.kind {
            Kind::Memory(e) => e.publish(channel, data, from, before_delivery).await,
            Kind::Redis(e) => e.publish(channel, data, from, before_delivery).await,
        }?;
        if let Some(tap) = self.tap.get() {
            tap.published(channel, offset, data, from);
        }
        Ok(offset)
    }

    async fn subscribe(
        &self,
        channel: &str,
        subscriber: Subscriber,
        since: Option<u64>,
        epoch: Option<&str>,
        reply: impl FnOnce(&Subscribed) -> Bytes + Send,
    ) -> Result<Subscribed, EngineError> {
        match &self.kind {
            Kind::Memory(e) => e.subscribe(channel, subscriber, since, epoch, reply).await,
            Kind::Redis(e) => e.subscribe(channel, subscriber, since, epoch, reply).await,
        }
    }

    async fn replay(&self, channel: &str, client: &str, room: usize) -> bool {
        match &self.kind {
            Kind::Memory(e) => e.replay(channel, client, room).await,
            Kind::Redis(e) => e.replay(channel, client, room).await,
        }
    }

    async fn unsubscribe(&self, channel: &str, client: &str) -> bool {
        match &self.kind {
            Kind::Memory(e) => e.unsubscribe(channel, client).await,
            Kind::Redis(e) => e.unsubscribe(channel, client).await,
        }
    }

    async fn presence(&self, channel: &str) -> Result<Vec<Member>, EngineError> {
        match &self.kind {
            Kind::Memory(e) => e.presence(channel).await,
            Kind::Redis(e) => e.presence(channel).await,
        }
    }

    async fn channels(&self) -> Vec<(String, usize)> {
        match &self.kind {
            Kind::Memory(e) => e.channels().await,
            Kind::Redis(e) => e.channels().await,
        }
    }

    fn is_up(&self) -> bool {
        match &self.kind {
            Kind::Memory(e) => e.is_up(),
            Kind::Redis(e) => e.is_up(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_kind_parses_and_prints() {
        assert_eq!("memory".parse(), Ok(EngineKind::Memory));
        assert_eq!("redis".parse(), Ok(EngineKind::Redis));
        assert!("Redis".parse::<EngineKind>().is_err());
        assert_eq!(EngineKind::Redis.to_string(), "redis");
    }
}
