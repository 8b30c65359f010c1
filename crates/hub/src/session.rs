//! One WebSocket client of the hub: authentication, the request loop,
//! rate limiting, token expiry, slow-consumer handling, and cleanup.
//!
//! Every frame for the client (replies, publications, presence events)
//! goes through its [`Outbox`] in order; the loop hands them to the
//! WebSocket in batches, so one (vectored) write carries everything queued,
//! straight from the shared frames when the socket takes it all. Replays
//! of history (subscribes with `since`) are pulled from the engine a page
//! at a time, only when the outbox has drained below
//! [`recovery::low_water`]: a recovery goes at the pace the client reads.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::Value;
use smallvec::SmallVec;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use wsline::{Acceptance, CloseCode, Message, Request, Response, WebSocket};

use crate::auth::{self, Claims};
use crate::config::pattern_matches;
use crate::engine::recovery;
use crate::engine::{text_frame, Engine, Subscriber};
use crate::hooks::{self, Call, Event, Verdict};
use crate::metrics::LatencyTally;
use crate::outbox::{Halt, Outbox};
use crate::protocol::{self, Member, Request as Op};
use crate::Hub;

/// Output waiting in the WebSocket beyond this stays in the outbox, where
/// it counts against the slow-consumer limit.
const WRITE_LIMIT: usize = 64 * 1024;
/// The 11th rate-limited publish within this window closes with 1008.
const ABUSE_WINDOW: Duration = Duration::from_secs(10);
const ABUSE_LIMIT: usize = 10;

/// The message of `unavailable` when a hook failed closed.
const HOOK_UNAVAILABLE: &str = "the application cannot decide now; retry later";

/// 4001: the token expired; reconnect with a fresh one.
const TOKEN_EXPIRED: u16 = 4001;
/// 4008: too slow to read; reconnect.
const SLOW_CONSUMER: u16 = 4008;

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => match std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None => out.push(b'%'),
            },
            (b'+', _) => out.push(b' '),
            (c, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Upgrades a `/ws` request read by the hub itself (HTTP/1.1, over TCP or
/// TLS): the session and its WebSocket, or `None` once refused. `open` is
/// the gate's permit, held by the session.
pub(crate) async fn open<S>(
    hub: Arc<Hub>,
    mut io: S,
    peer: SocketAddr,
    request: Request,
    leftover: Vec<u8>,
    open: wsline::Connected,
) -> Option<(Session, WebSocket<S>)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let admitted = match admit(&hub, peer, &request, false).await {
        Ok(admitted) => admitted,
        Err(response) => {
            wsline::refuse(&mut io, &response).await;
            return None;
        }
    };
    let mut ws = match wsline::accept_request(io, request, &leftover, &hub.config.server, |_| {
        Ok(Acceptance::default())
    })
    .await
    {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(%peer, "upgrade refused: {e}");
            return None;
        }
    };
    hub.metrics.opened[0].fetch_add(1, Relaxed);
    let session = admitted.into_session(hub, &mut ws, open).await?;
    Some((session, ws))
}

/// A client [`admit`] let in, to be upgraded.
pub(crate) struct Admitted {
    claims: Option<Claims>,
    number: u64,
    member: Member,
    hook: Option<Box<hooks::Context>>,
    /// The connect hook's refusal with a close code: upgraded only to say
    /// so where a browser's script can read it.
    close_with: Option<(u16, String)>,
}

/// The connection cap, the token, the connect hook: what the hub asks
/// before a WebSocket upgrade, or the response that refuses it. With
/// `validated`, the request has passed the upgrade's checks already (the
/// hyper path: RFC 8441 requests have rules of their own); otherwise a
/// request the upgrade would refuse is refused before the backend is
/// asked.
pub(crate) async fn admit(
    hub: &Hub,
    peer: SocketAddr,
    request: &Request,
    validated: bool,
) -> Result<Admitted, Response> {
    if hub.metrics.connections.load(Relaxed) as usize >= hub.config.server.limits.max_connections {
        return Err(Response::reject(503, "too many connections; retry later"));
    }
    let token = query_param(request.query(), "token");
    let claims = if hub.auth.is_on() {
        let verified = match token.as_deref() {
            None => Err(auth::TokenError::Malformed),
            Some(t) => hub.auth.verify(t, auth::unix_now()).await,
        };
        match verified {
            Ok(c) => Some(c),
            Err(e) => {
                let text = if token.is_none() {
                    "a token is required: connect to /ws?token=JWT".to_owned()
                } else {
                    format!("token refused: {e}")
                };
                return Err(Response::reject(401, &text));
            }
        }
    } else {
        None
    };
    let (number, client) = hub.new_client();
    let mut member = Member {
        client,
        user: claims.as_ref().and_then(|c| c.user.clone()),
    };
    let hooks = &hub.hooks;
    let mut hook = None;
    let mut close_with = None;
    if hooks.is_on(Event::Connect) || hooks.per_channel() {
        let claims_json = claims
            .as_ref()
            .and(token.as_deref())
            .and_then(hooks::claims_json);
        let mut context = hooks.context(peer, request, claims_json);
        if hooks.is_on(Event::Connect) {
            // A request the upgrade would refuse (not a WebSocket request,
            // an Origin not allowed) is refused before the backend is asked.
            use wsline::proto::handshake::{check_origin, validate_request};
            if !validated {
                if let Err(e) = validate_request(request)
                    .and_then(|()| check_origin(request, &hub.config.server.allowed_origins))
                {
                    tracing::debug!(%peer, "upgrade refused: {e}");
                    return Err(Response::from_error(&e));
                }
            }
            let call = Call::new(
                Event::Connect,
                &member.client,
                member.user.as_deref(),
                &context,
            );
            match hooks.ask(Event::Connect, &call).await {
                Verdict::Allow(answer) => {
                    if let Some(user) = answer.user {
                        member.user = Some(user);
                    }
                    context.subscribe = answer.subscribe.unwrap_or_default();
                }
                Verdict::Deny(denial) => match denial.close() {
                    Some(code) => close_with = Some((code, denial.message().to_owned())),
                    None => return Err(Response::reject(denial.status(), denial.message())),
                },
                Verdict::Unavailable => return Err(Response::reject(503, HOOK_UNAVAILABLE)),
            }
        }
        if hooks.per_channel() || !context.subscribe.is_empty() {
            hook = Some(Box::new(context));
        }
    }
    Ok(Admitted {
        claims,
        number,
        member,
        hook,
        close_with,
    })
}

impl Admitted {
    /// The session of the WebSocket `ws` just opened, or `None` when the
    /// connect hook refused it with a close code (sent here).
    pub(crate) async fn into_session<S>(
        self,
        hub: Arc<Hub>,
        ws: &mut WebSocket<S>,
        open: wsline::Connected,
    ) -> Option<Session>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Admitted {
            claims,
            number,
            member,
            hook,
            close_with,
        } = self;
        if let Some((code, reason)) = close_with {
            let reason = truncate(&reason, 123);
            let wait = wsline::shutdown_grace(hub.config.server.protocol.close_timeout);
            let _ = tokio::time::timeout(wait, ws.close(close_code(code), reason)).await;
            return None;
        }
        let outbox = Arc::new(Outbox::for_member(member, hub.config.max_queue));
        Some(Session {
            rate: Bucket::new(hub.config.publish_rate),
            limited: None,
            hub,
            number,
            outbox,
            claims: claims.map(Box::new),
            subscriptions: Subscriptions::default(),
            replays: Replaying::default(),
            hook,
            _open: open,
        })
    }
}

/// `text` cut to at most `max` bytes at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// One open connection's state: what lives as long as it does (with its
/// WebSocket, the whole of its task; keep it small).
pub(crate) struct Session {
    hub: Arc<Hub>,
    /// The hub's number for this session (see [`Hub::enter`]).
    number: u64,
    /// Its queue, which also holds who the client is (`member`).
    outbox: Arc<Outbox>,
    /// Boxed: most connections have none, and this lives as long as the
    /// connection.
    claims: Option<Box<Claims>>,
    subscriptions: Subscriptions,
    /// Channels whose replay is in progress, pulled in turn (at most one
    /// entry per subscription).
    replays: Replaying,
    /// What hook calls about this client carry (boxed, and only where a
    /// subscribe or publish hook is configured or the connect hook
    /// subscribed it to channels).
    hook: Option<Box<hooks::Context>>,
    rate: Bucket,
    /// When the last rate-limited publishes came (boxed: most connections
    /// are never limited).
    #[allow(clippy::box_collection)] // 8 bytes in every session, not 32
    limited: Option<Box<VecDeque<Instant>>>,
    /// The gate's count of open connections, released on drop.
    _open: wsline::Connected,
}

/// The channels a session is subscribed to: at most `max_subscriptions`,
/// looked up by a linear scan, the first two held inline (a connection
/// usually has few; a hash set costs 48 bytes and a table even when it
/// has one).
#[derive(Default)]
struct Subscriptions(SmallVec<[Box<str>; 2]>);

impl Subscriptions {
    fn contains(&self, channel: &str) -> bool {
        self.0.iter().any(|c| **c == *channel)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `channel` unless it is there already.
    fn insert(&mut self, channel: String) {
        if !self.contains(&channel) {
            self.0.push(channel.into_boxed_str());
        }
    }

    /// Removes `channel`; false if it was not there.
    fn remove(&mut self, channel: &str) -> bool {
        match self.0.iter().position(|c| **c == *channel) {
            Some(i) => {
                self.0.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Empties the set, giving what it held.
    fn take(&mut self) -> SmallVec<[Box<str>; 2]> {
        std::mem::take(&mut self.0)
    }
}

/// Channels whose replay is in progress, pulled in turn: boxed, and only
/// while there is one (8 bytes in every session, not a `VecDeque`'s 32).
#[derive(Default)]
#[allow(clippy::box_collection)]
struct Replaying(Option<Box<VecDeque<String>>>);

impl Replaying {
    fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    fn contains(&self, channel: &str) -> bool {
        self.0
            .as_ref()
            .is_some_and(|q| q.iter().any(|c| c == channel))
    }

    fn push_back(&mut self, channel: String) {
        self.0.get_or_insert_with(Box::default).push_back(channel);
    }

    fn pop_front(&mut self) -> Option<String> {
        let q = self.0.as_mut()?;
        let channel = q.pop_front();
        if q.is_empty() {
            self.0 = None;
        }
        channel
    }

    fn remove(&mut self, channel: &str) {
        if let Some(q) = &mut self.0 {
            q.retain(|c| c != channel);
            if q.is_empty() {
                self.0 = None;
            }
        }
    }
}

enum Step {
    Received(Option<Result<Message, wsline::Error>>),
    SlowConsumer,
    /// The hub is shutting down.
    ShutDown,
    /// The token expired.
    Expired,
    /// The outbox has room for the next page of a replay.
    Refill,
}

/// How the session ends from its side.
enum End {
    Close(CloseCode, &'static str),
    Over(u16),
}

impl Session {
    fn push(&self, json: &str) {
        self.outbox.push(text_frame(json), None);
    }

    fn error(&self, id: &Option<Value>, code: &str, message: &str) {
        self.push(&protocol::error(id, code, message));
    }

    fn allowed(&self, channel: &str) -> bool {
        match self.claims.as_ref().and_then(|c| c.channels.as_ref()) {
            None => true,
            Some(patterns) => patterns.iter().any(|p| pattern_matches(p, channel)),
        }
    }

    /// Serves the connection to its end. The future this makes is most
    /// of what an open connection costs: it holds the session and its
    /// WebSocket and little else (every step that awaits the engine is
    /// boxed, so it exists only while it runs).
    ///
    /// Not an `async fn`: that would move its arguments into locals of
    /// the future, and keep room for both.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    pub(crate) fn serve<S>(mut self, mut ws: WebSocket<S>) -> impl Future<Output = ()> + Send
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        async move {
            self.hub.metrics.connections.fetch_add(1, Relaxed);
            self.hub.enter(self.number, &self.outbox);
            if let Some(w) = &self.hub.webhooks {
                w.emit(
                    crate::webhooks::Kind::ClientConnected,
                    None,
                    Some(self.outbox.member()),
                );
            }
            let code = self.run(&mut ws).await;
            if let Some(w) = &self.hub.webhooks {
                w.emit(
                    crate::webhooks::Kind::ClientDisconnected,
                    None,
                    Some(self.outbox.member()),
                );
            }
            self.hub.leave(self.number);
            self.hub.metrics.connections.fetch_sub(1, Relaxed);
            self.hub.metrics.closed(code);
        }
    }

    /// Runs until the connection ends; returns the close code to count.
    async fn run<S>(&mut self, ws: &mut WebSocket<S>) -> u16
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.push(&protocol::welcome(
            &self.outbox.member().client,
            self.outbox.member().user.as_deref(),
        ));
        if self.hook.is_some() {
            Box::pin(self.subscribe_for_backend()).await;
        }
        // An `exp` too far ahead to represent (say 1e30) never comes.
        let mut expiry = self
            .claims
            .as_ref()
            .and_then(|c| c.expires)
            .and_then(|exp| {
                let at = UNIX_EPOCH.checked_add(Duration::from_secs(exp))?;
                let left = at.duration_since(SystemTime::now()).unwrap_or_default();
                tokio::time::Instant::now().checked_add(left)
            })
            // Boxed: a timer is big, and most connections have none.
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        let end = loop {
            let refill =
                (!self.replays.is_empty()).then(|| recovery::low_water(self.hub.config.max_queue));
            let step = poll_fn(|cx| {
                if expired(&mut expiry, cx).is_ready() {
                    return Poll::Ready(Step::Expired);
                }
                poll_step(ws, &self.outbox, &self.hub, refill, cx)
            })
            .await;
            match step {
                Step::ShutDown => {
                    let (code, reason) = wsline::SHUTDOWN_CLOSE;
                    break End::Close(code, reason);
                }
                Step::Expired => break End::Close(close_code(TOKEN_EXPIRED), "token expired"),
                Step::Refill => Box::pin(self.refill()).await,
                Step::SlowConsumer => {
                    self.hub
                        .metrics
                        .slow_consumer_disconnects
                        .fetch_add(1, Relaxed);
                    break End::Close(close_code(SLOW_CONSUMER), "slow consumer");
                }
                Step::Received(Some(Ok(message))) => {
                    if let Some(end) = Box::pin(self.on_message(message)).await {
                        break end;
                    }
                }
                Step::Received(Some(Err(e))) => {
                    let code = e.termination().map_or(1006, |t| t.code().as_u16());
                    break End::Over(code);
                }
                Step::Received(None) => {
                    break End::Over(ws.termination().map_or(1000, |t| t.code().as_u16()));
                }
            }
        };
        self.outbox.close();
        // Leave every channel now: other members get their `leave` without
        // waiting for this client's closing handshake (a slow consumer's
        // can take the whole close timeout).
        Box::pin(self.cleanup()).await;
        match end {
            End::Over(code) => code,
            End::Close(code, reason) => {
                let wait = wsline::shutdown_grace(self.hub.config.server.protocol.close_timeout);
                let _ = Box::pin(tokio::time::timeout(wait, ws.close(code, reason))).await;
                code.as_u16()
            }
        }
    }

    /// Queues the next page of the oldest replay in progress, filling the
    /// outbox to [`recovery::fill_to`].
    async fn refill(&mut self) {
        let Some(channel) = self.replays.pop_front() else {
            return;
        };
        let room =
            recovery::fill_to(self.hub.config.max_queue).saturating_sub(self.outbox.len_bytes());
        let more = self
            .hub
            .engine
            .replay(&channel, &self.outbox.member().client, room)
            .await;
        if more {
            self.replays.push_back(channel);
        }
    }

    async fn on_message(&mut self, message: Message) -> Option<End> {
        let metrics = &self.hub.metrics;
        metrics.messages_received.fetch_add(1, Relaxed);
        metrics
            .bytes_received
            .fetch_add(message.len() as u64, Relaxed);
        let Message::Text(text) = message else {
            self.error(
                &None,
                "bad_request",
                "binary messages are not part of the protocol: send JSON text",
            );
            return None;
        };
        let (id, op) = match protocol::parse(&text) {
            Ok(r) => r,
            Err((id, why)) => {
                self.error(&id, "bad_request", &why);
                return None;
            }
        };
        match op {
            Op::Ping => self.push(&protocol::pong(&id)),
            Op::Subscribe {
                channel,
                since,
                epoch,
            } => self.subscribe(&id, channel, since, epoch).await,
            Op::Unsubscribe { channel } => {
                if self.subscriptions.remove(&channel) {
                    self.replays.remove(&channel);
                    self.hub
                        .engine
                        .unsubscribe(&channel, &self.outbox.member().client)
                        .await;
                    self.push(&protocol::unsubscribed(&id, &channel));
                } else {
                    self.error(&id, "not_found", "not subscribed to this channel");
                }
            }
            Op::Publish { channel, data } => return self.publish(&id, &channel, &data).await,
            Op::Presence { channel } => {
                if !self.allowed(&channel) {
                    self.error(&id, "forbidden", "the token does not allow this channel");
                } else if !self.hub.config.policy(&channel).presence {
                    self.error(&id, "forbidden", "presence is off for this channel");
                } else {
                    match self.hub.engine.presence(&channel).await {
                        Ok(members) => self.push(&protocol::presence(&id, &channel, &members)),
                        Err(e) => self.error(&id, "unavailable", &e.to_string()),
                    }
                }
            }
        }
        None
    }

    async fn subscribe(
        &mut self,
        id: &Option<Value>,
        channel: String,
        since: Option<u64>,
        epoch: Option<String>,
    ) {
        if !self.allowed(&channel) {
            return self.error(id, "forbidden", "the token does not allow this channel");
        }
        if !self.subscriptions.contains(&channel)
            && self.subscriptions.len() >= self.hub.config.max_subscriptions
        {
            return self.error(
                id,
                "limit_exceeded",
                "too many subscriptions on this connection",
            );
        }
        if self.hub.config.policy(&channel).subscribe_hook {
            match self.ask(Event::Subscribe, &channel, None).await {
                Verdict::Allow(_) => {}
                Verdict::Deny(d) => return self.error(id, d.code(), d.message()),
                Verdict::Unavailable => return self.error(id, "unavailable", HOOK_UNAVAILABLE),
            }
        }
        self.join(id, channel, since, epoch).await;
    }

    /// Subscribes to the channels the connect hook named, as if the
    /// client had asked (the `subscribed` replies carry no `id`), without
    /// asking the token or the subscribe hook; then drops the hook context
    /// unless subscribe or publish hooks need it.
    async fn subscribe_for_backend(&mut self) {
        let channels = self
            .hook
            .as_mut()
            .map(|c| std::mem::take(&mut c.subscribe))
            .unwrap_or_default();
        for channel in channels {
            if self.subscriptions.len() >= self.hub.config.max_subscriptions {
                self.error(
                    &None,
                    "limit_exceeded",
                    "too many subscriptions on this connection",
                );
                break;
            }
            self.join(&None, channel, None, None).await;
        }
        if !self.hub.hooks.per_channel() {
            self.hook = None;
        }
    }

    /// Asks the hook for `event` about this client and `channel`.
    async fn ask(&self, event: Event, channel: &str, data: Option<&RawValue>) -> Verdict {
        let empty = hooks::Context::default();
        let context = self.hook.as_deref().unwrap_or(&empty);
        let mut call = Call::new(
            event,
            &self.outbox.member().client,
            self.outbox.member().user.as_deref(),
            context,
        );
        call.channel = Some(channel);
        call.data = data;
        self.hub.hooks.ask(event, &call).await
    }

    /// Subscribes, the checks done.
    async fn join(
        &mut self,
        id: &Option<Value>,
        channel: String,
        since: Option<u64>,
        epoch: Option<String>,
    ) {
        let subscriber = Subscriber {
            outbox: self.outbox.clone(),
        };
        let reply_id = id.clone();
        let reply_channel = channel.clone();
        let result = self
            .hub
            .engine
            .subscribe(&channel, subscriber, since, epoch.as_deref(), move |s| {
                text_frame(&protocol::subscribed(
                    &reply_id,
                    &reply_channel,
                    s.offset,
                    &s.epoch,
                    s.recovered,
                ))
            })
            .await;
        match result {
            Ok(s) => {
                if s.replaying && !self.replays.contains(&channel) {
                    self.replays.push_back(channel.clone());
                }
                self.subscriptions.insert(channel);
            }
            Err(e) => self.error(id, "unavailable", &e.to_string()),
        }
    }

    async fn publish(
        &mut self,
        id: &Option<Value>,
        channel: &str,
        data: &serde_json::value::RawValue,
    ) -> Option<End> {
        if !self.allowed(channel) {
            self.error(id, "forbidden", "the token does not allow this channel");
            return None;
        }
        if !self.hub.config.policy(channel).client_publish {
            self.error(id, "forbidden", "clients may not publish on this channel");
            return None;
        }
        let now = Instant::now();
        if !self.rate.take(now, self.hub.config.publish_rate) {
            let limited = self.limited.get_or_insert_default();
            while limited
                .front()
                .is_some_and(|t| now.duration_since(*t) > ABUSE_WINDOW)
            {
                limited.pop_front();
            }
            if limited.len() >= ABUSE_LIMIT {
                return Some(End::Close(
                    CloseCode::POLICY_VIOLATION,
                    "publish rate limit abused",
                ));
            }
            limited.push_back(now);
            self.error(id, "rate_limited", "too many publishes: slow down");
            return None;
        }
        let replaced;
        let data = if self.hub.config.policy(channel).publish_hook {
            match self.ask(Event::Publish, channel, Some(data)).await {
                Verdict::Allow(answer) => {
                    replaced = answer.data;
                    replaced.as_deref().unwrap_or(data)
                }
                Verdict::Deny(d) => {
                    self.error(id, d.code(), d.message());
                    return None;
                }
                Verdict::Unavailable => {
                    self.error(id, "unavailable", HOOK_UNAVAILABLE);
                    return None;
                }
            }
        } else {
            data
        };
        let from = self
            .outbox
            .member()
            .user
            .as_deref()
            .unwrap_or(&self.outbox.member().client);
        let outbox = self.outbox.clone();
        let reply_id = id.clone();
        let result = self
            .hub
            .engine
            .publish(channel, data, Some(from), move |offset| {
                outbox.push(
                    text_frame(&protocol::published(&reply_id, channel, offset)),
                    None,
                );
            })
            .await;
        if let Err(e) = result {
            self.error(id, "unavailable", &e.to_string());
        }
        None
    }

    async fn cleanup(&mut self) {
        for channel in self.subscriptions.take() {
            self.hub
                .engine
                .unsubscribe(&channel, &self.outbox.member().client)
                .await;
        }
    }
}

fn close_code(code: u16) -> CloseCode {
    CloseCode::new(code).unwrap_or(CloseCode::INTERNAL_ERROR)
}

/// Ready once the token's expiry (if any) has come.
fn expired(expiry: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> Poll<()> {
    match expiry {
        Some(sleep) => sleep.as_mut().poll(cx),
        None => Poll::Pending,
    }
}

thread_local! {
    /// The frames of one write, handed to the WebSocket in one go: one
    /// buffer per thread rather than one per connection (an idle
    /// connection keeps none).
    static FRAMES: RefCell<Vec<Bytes>> = const { RefCell::new(Vec::new()) };
}

/// Moves queued frames into the WebSocket (up to [`WRITE_LIMIT`] waiting),
/// lets it write and read, and returns the next client message, the
/// slow-consumer verdict, or (with `refill`, a replay in progress) that
/// the outbox holds no more than `refill` bytes.
fn poll_step<S>(
    ws: &mut WebSocket<S>,
    outbox: &Outbox,
    hub: &Hub,
    refill: Option<usize>,
    cx: &mut Context<'_>,
) -> Poll<Step>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let mut budget = WRITE_LIMIT.saturating_sub(ws.buffered_output());
        let mut moved = false;
        // One lock: take what fits, register for the next push (a push
        // past the limit or shutdown must wake this connection even while
        // its socket is full), learn whether more is waiting.
        let drained = FRAMES.with_borrow_mut(|frames| {
            let mut now = None;
            let mut bytes = 0;
            let mut latencies = LatencyTally::default();
            let drained = outbox.drain_and_register(
                cx.waker(),
                |len| {
                    let fits = len <= budget || budget == WRITE_LIMIT;
                    budget = budget.saturating_sub(len);
                    fits
                },
                |(frame, published)| {
                    bytes += frame.len() as u64;
                    if let Some(at) = published {
                        let now = *now.get_or_insert_with(Instant::now);
                        latencies.add(now.duration_since(at));
                    }
                    frames.push(frame);
                },
            );
            if !frames.is_empty() {
                moved = true;
                let metrics = &hub.metrics;
                metrics
                    .messages_sent
                    .fetch_add(frames.len() as u64, Relaxed);
                metrics.bytes_sent.fetch_add(bytes, Relaxed);
                metrics.record_latencies(&latencies);
                // Straight from the shared frames, one vectored write when
                // the socket takes it; the rest is queued (copied) and
                // written by poll_recv below.
                let _ = ws.write_encoded(cx, frames);
            }
            frames.clear();
            drained
        });
        let more = match drained {
            Err(Halt::Overflowed) => return Poll::Ready(Step::SlowConsumer),
            Err(Halt::ShutDown) => return Poll::Ready(Step::ShutDown),
            Ok(more) => more,
        };
        if refill.is_some_and(|low| outbox.len_bytes() <= low) {
            return Poll::Ready(Step::Refill);
        }
        let queued = ws.buffered_output();
        if let Poll::Ready(r) = ws.poll_recv(cx) {
            return Poll::Ready(Step::Received(r));
        }
        // Writing made room and more is waiting: move it now. Only after
        // progress (frames moved or bytes written): a frame larger than
        // the room left must wait for the socket, not spin the runtime.
        // (A push since the drain wakes this task: it registered.)
        let left = ws.buffered_output();
        if (moved || left < queued) && left < WRITE_LIMIT && more {
            continue;
        }
        return Poll::Pending;
    }
}

/// The publish token bucket: `rate` per second (the hub's
/// `publish_rate`, passed in rather than kept), a burst of twice that,
/// full at the start.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: u32) -> Self {
        Self {
            tokens: 2.0 * f64::from(rate),
            at: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant, rate: u32) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(2.0 * rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
