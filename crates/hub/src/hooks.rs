//! Backend hooks: the hub asks the application's HTTP backend before it
//! lets a client connect, subscribe or publish (docs/hooks.md).
//!
//! Owns the call (a JSON POST over [`crate::http_client`], bounded by the
//! `[hooks]` timeout and by `max_in_flight` calls at once on this node),
//! reading the answer (allow, deny, or allow with changes) and the
//! failure policy (a failed call refuses, or allows with `fail_open`),
//! and counts every call in `wsline_hook_requests_total`. Does not own
//! what a verdict does to a client: that is `session`'s.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use wsline::Request;

use crate::config::{valid_channel, HubConfig};
use crate::http_client::Endpoint;
use crate::metrics::Metrics;

/// The largest answer body read from a hook.
pub(crate) const MAX_ANSWER: usize = 1 << 20;

/// The events a hook can be asked about (the index of its counters in
/// [`Metrics::hook_requests`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Connect = 0,
    Subscribe = 1,
    Publish = 2,
}

impl Event {
    fn name(self) -> &'static str {
        crate::metrics::HOOKS[self as usize]
    }
}

/// How a call ended, the `result` label of its counter (the index in
/// [`crate::metrics::HOOK_RESULTS`]).
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Allow = 0,
    Deny = 1,
    Error = 2,
    Timeout = 3,
    Overload = 4,
}

/// One configured hook.
struct Hook {
    url: String,
    endpoint: Endpoint,
    fail_open: bool,
}

/// The hooks of a hub, built once from `[hooks]`.
pub(crate) struct Hooks {
    hooks: [Option<Hook>; 3],
    timeout: Duration,
    max_in_flight: usize,
    in_flight: AtomicUsize,
    /// Lower-case header names to forward.
    forward: Vec<String>,
    metrics: Arc<Metrics>,
    /// When each hook last logged a failure at `WARN`, in milliseconds
    /// after `started` (0: never): at most one a second each, so an
    /// outage does not flood the log (every failure is counted).
    warned: [AtomicU64; 3],
    started: Instant,
}

/// What a client's connection carries into its hook calls: kept by the
/// session (boxed) only where subscribe or publish hooks are on.
#[derive(Debug, Default)]
pub(crate) struct Context {
    pub(crate) remote: Option<SocketAddr>,
    /// The forwarded headers of the upgrade request.
    pub(crate) headers: Map<String, Value>,
    /// The token's claims, as the token carries them.
    pub(crate) claims: Option<Value>,
    /// Channels the connect hook subscribed the client to, until the
    /// session has subscribed them.
    pub(crate) subscribe: Vec<String>,
}

/// The JSON body of a hook call.
#[derive(Serialize)]
pub(crate) struct Call<'a> {
    pub(crate) hook: &'static str,
    pub(crate) client: &'a str,
    pub(crate) user: Option<&'a str>,
    pub(crate) remote: Option<String>,
    pub(crate) headers: &'a Map<String, Value>,
    pub(crate) claims: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<&'a RawValue>,
}

impl<'a> Call<'a> {
    /// A call about `client` with what `context` holds.
    pub(crate) fn new(
        event: Event,
        client: &'a str,
        user: Option<&'a str>,
        context: &'a Context,
    ) -> Self {
        Call {
            hook: event.name(),
            client,
            user,
            remote: context.remote.map(|a| a.to_string()),
            headers: &context.headers,
            claims: context.claims.as_ref(),
            channel: None,
            data: None,
        }
    }
}

/// The backend's answer (docs/hooks.md). Unknown keys make it malformed,
/// so a misspelt `deny` never allows.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Answer {
    deny: Option<Denial>,
    /// connect: the client's user from now on.
    pub(crate) user: Option<String>,
    /// connect: channels to subscribe the client to.
    pub(crate) subscribe: Option<Vec<String>>,
    /// publish: the data to publish instead of the client's.
    #[serde(default, deserialize_with = "present")]
    pub(crate) data: Option<Box<RawValue>>,
}

/// Any JSON value, `null` too, as present.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    <Box<RawValue> as Deserialize>::deserialize(d).map(Some)
}

/// A refusal from the backend.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Denial {
    /// connect: the HTTP status of the refused upgrade (400–599; 403 when
    /// neither this nor `close` is given).
    status: Option<u16>,
    /// connect: upgrade, then close with this code (3000–4999).
    close: Option<u16>,
    /// subscribe, publish: the error code the client sees (`forbidden`).
    code: Option<String>,
    /// What the client is told.
    message: Option<String>,
}

impl Denial {
    /// subscribe, publish: the error code.
    pub(crate) fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("forbidden")
    }

    /// The message for the client.
    pub(crate) fn message(&self) -> &str {
        self.message
            .as_deref()
            .unwrap_or("refused by the application")
    }

    /// connect: the close code to close with after the upgrade, if the
    /// backend asked for one instead of an HTTP status.
    pub(crate) fn close(&self) -> Option<u16> {
        self.close
    }

    /// connect: the HTTP status of the refusal.
    pub(crate) fn status(&self) -> u16 {
        self.status.unwrap_or(403)
    }
}

/// What the hub does after asking.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Go on, with the answer's changes (none when a failed call was let
    /// through by `fail_open`).
    Allow(Box<Answer>),
    /// The backend refused.
    Deny(Box<Denial>),
    /// The call failed and the hook fails closed: the client gets
    /// `unavailable` (connect: 503).
    Unavailable,
}

/// Decrements the in-flight count when dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Hooks {
    /// The hooks `[hooks]` configures (the URLs were checked with the
    /// configuration).
    pub(crate) fn new(config: &HubConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        let h = &config.hooks;
        let hook = |key: &str, url: &Option<String>, fail_open: Option<bool>| {
            url.as_ref()
                .map(|url| {
                    Ok::<_, String>(Hook {
                        url: url.clone(),
                        endpoint: Endpoint::new(url)
                            .map_err(|e| format!("hooks.{key} {url:?}: {e}"))?,
                        fail_open: fail_open.unwrap_or(h.fail_open),
                    })
                })
                .transpose()
        };
        Ok(Hooks {
            hooks: [
                hook("connect_url", &h.connect_url, h.connect_fail_open)?,
                hook("subscribe_url", &h.subscribe_url, h.subscribe_fail_open)?,
                hook("publish_url", &h.publish_url, h.publish_fail_open)?,
            ],
            timeout: Duration::from_secs_f64(h.timeout.clamp(0.001, 3600.0)),
            max_in_flight: h.max_in_flight,
            in_flight: AtomicUsize::new(0),
            forward: h
                .forward_headers
                .iter()
                .map(|n| n.to_ascii_lowercase())
                .collect(),
            metrics,
            warned: Default::default(),
            started: Instant::now(),
        })
    }

    /// Whether the hook for `event` is configured.
    pub(crate) fn is_on(&self, event: Event) -> bool {
        self.hooks[event as usize].is_some()
    }

    /// Whether a session must keep its [`Context`]: a subscribe or
    /// publish hook is configured.
    pub(crate) fn per_channel(&self) -> bool {
        self.is_on(Event::Subscribe) || self.is_on(Event::Publish)
    }

    /// The context of a connection from `remote` that sent `request`,
    /// with the token's `claims`.
    pub(crate) fn context(
        &self,
        remote: SocketAddr,
        request: &Request,
        claims: Option<Value>,
    ) -> Context {
        let mut headers = Map::new();
        for (name, value) in request.headers.iter() {
            let name = name.to_ascii_lowercase();
            if !self.forward.contains(&name) {
                continue;
            }
            let value = value.trim();
            match headers.get_mut(&name) {
                // Repeated fields: joined as HTTP allows (cookies with `; `).
                Some(Value::String(v)) => {
                    v.push_str(if name == "cookie" { "; " } else { ", " });
                    v.push_str(value);
                }
                _ => {
                    headers.insert(name, Value::String(value.to_owned()));
                }
            }
        }
        Context {
            remote: Some(remote),
            headers,
            claims,
            subscribe: Vec::new(),
        }
    }

    /// Asks the hook for `event` about `call` and applies its failure
    /// policy. With no such hook: allow.
    pub(crate) async fn ask(&self, event: Event, call: &Call<'_>) -> Verdict {
        let Some(hook) = &self.hooks[event as usize] else {
            return Verdict::Allow(Box::default());
        };
        let result = match self.admit() {
            None => Err((
                Outcome::Overload,
                format!("{} hook calls already in flight", self.max_in_flight),
            )),
            Some(_in_flight) => self.call(hook, event, call).await,
        };
        let (outcome, verdict) = match result {
            Ok(answer) => match answer.deny {
                Some(denial) => (Outcome::Deny, Verdict::Deny(Box::new(denial))),
                None => (Outcome::Allow, Verdict::Allow(answer)),
            },
            Err((outcome, why)) => {
                let open = hook.fail_open;
                let then = if open {
                    "fail_open: allowed"
                } else {
                    "refused"
                };
                if self.may_warn(event) {
                    tracing::warn!(hook = event.name(), url = %hook.url, "hook failed ({then}): {why}");
                } else {
                    tracing::debug!(hook = event.name(), url = %hook.url, "hook failed ({then}): {why}");
                }
                let verdict = if open {
                    Verdict::Allow(Box::default())
                } else {
                    Verdict::Unavailable
                };
                (outcome, verdict)
            }
        };
        self.metrics.hook_requests[event as usize][outcome as usize].fetch_add(1, Relaxed);
        verdict
    }

    /// Whether a failure of `event`'s hook may be logged at `WARN` now.
    fn may_warn(&self, event: Event) -> bool {
        let now = (self.started.elapsed().as_millis() as u64).max(1);
        let last = &self.warned[event as usize];
        let prev = last.load(Relaxed);
        (prev == 0 || now >= prev + 1000)
            && last.compare_exchange(prev, now, Relaxed, Relaxed).is_ok()
    }

    /// One more call in flight, unless `max_in_flight` are.
    fn admit(&self) -> Option<InFlight<'_>> {
        let before = self.in_flight.fetch_add(1, Relaxed);
        let guard = InFlight(&self.in_flight);
        (before < self.max_in_flight).then_some(guard)
    }

    async fn call(
        &self,
        hook: &Hook,
        event: Event,
        call: &Call<'_>,
    ) -> Result<Box<Answer>, (Outcome, String)> {
        let body = serde_json::to_vec(call).map_err(|e| (Outcome::Error, e.to_string()))?;
        let exchange = hook.endpoint.send(
            "POST",
            "Content-Type: application/json\r\nAccept: application/json\r\n",
            &body,
            MAX_ANSWER,
        );
        let (status, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => {
                return Err((
                    Outcome::Timeout,
                    format!("no answer within {:?}", self.timeout),
                ))
            }
            Ok(Err(e)) => return Err((Outcome::Error, e.to_string())),
            Ok(Ok(answer)) => answer,
        };
        let answer = match status {
            204 => Answer::default(),
            200 => serde_json::from_slice(&body)
                .map_err(|e| (Outcome::Error, format!("a malformed answer: {e}")))?,
            other => return Err((Outcome::Error, format!("HTTP {other}, not 200"))),
        };
        check(event, &answer)
            .map_err(|why| (Outcome::Error, format!("a malformed answer: {why}")))?;
        Ok(Box::new(answer))
    }
}

/// Whether `answer` says only what an answer to `event` may say.
fn check(event: Event, answer: &Answer) -> Result<(), String> {
    let only = |what: &str, ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(format!("{what} is not part of a {} answer", event.name()))
        }
    };
    only("user", answer.user.is_none() || event == Event::Connect)?;
    only(
        "subscribe",
        answer.subscribe.is_none() || event == Event::Connect,
    )?;
    only("data", answer.data.is_none() || event == Event::Publish)?;
    if let Some(channels) = &answer.subscribe {
        if let Some(bad) = channels.iter().find(|c| !valid_channel(c)) {
            return Err(format!("{bad:?} is not a valid channel name"));
        }
    }
    if let Some(d) = &answer.deny {
        if event == Event::Connect {
            only("deny.code", d.code.is_none())?;
            if d.status.is_some() && d.close.is_some() {
                return Err("deny has both status and close".into());
            }
            if d.status.is_some_and(|s| !(400..=599).contains(&s)) {
                return Err("deny.status must be 400–599".into());
            }
            if d.close.is_some_and(|c| !(3000..=4999).contains(&c)) {
                return Err("deny.close must be 3000–4999".into());
            }
        } else {
            only("deny.status", d.status.is_none())?;
            only("deny.close", d.close.is_none())?;
            if d.code.as_ref().is_some_and(|c| {
                c.is_empty()
                    || c.len() > 64
                    || !c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            }) {
                return Err("deny.code must be 1–64 of A-Za-z0-9_".into());
            }
        }
    }
    Ok(())
}

/// The claims of `token` (already verified) as JSON.
pub(crate) fn claims_json(token: &str) -> Option<Value> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(event: Event, text: &str) -> Result<Answer, String> {
        let answer: Answer = serde_json::from_str(text).map_err(|e| e.to_string())?;
        check(event, &answer)?;
        Ok(answer)
    }

    #[test]
    fn answers_say_only_what_their_event_allows() {
        assert!(parse(Event::Connect, "{}").is_ok());
        assert!(parse(
            Event::Connect,
            r#"{"user":"ann","subscribe":["inbox:ann"]}"#
        )
        .is_ok());
        assert!(parse(Event::Connect, r#"{"deny":{"status":401,"message":"m"}}"#).is_ok());
        assert!(parse(Event::Connect, r#"{"deny":{"close":4403}}"#).is_ok());
        assert!(parse(Event::Connect, r#"{"deny":{"close":1000}}"#).is_err());
        assert!(parse(Event::Connect, r#"{"deny":{"status":200}}"#).is_err());
        assert!(parse(Event::Connect, r#"{"deny":{"status":403,"close":4403}}"#).is_err());
        assert!(parse(Event::Connect, r#"{"subscribe":["bad name"]}"#).is_err());
        assert!(parse(Event::Subscribe, r#"{"deny":{"code":"banned"}}"#).is_ok());
        assert!(parse(Event::Subscribe, r#"{"deny":{"status":403}}"#).is_err());
        assert!(parse(Event::Subscribe, r#"{"user":"x"}"#).is_err());
        assert!(parse(Event::Subscribe, r#"{"data":1}"#).is_err());
        assert!(parse(Event::Publish, r#"{"data":null}"#)
            .unwrap()
            .data
            .is_some());
        assert!(
            parse(Event::Publish, r#"{"dney":{}}"#).is_err(),
            "a typo never allows"
        );
        assert!(parse(Event::Publish, r#"[]"#).is_err());
    }

    #[test]
    fn forwarded_headers_are_named_in_lower_case_and_repeats_joined() {
        let mut config = HubConfig::default();
        config.hooks.forward_headers = vec!["Cookie".into(), "X-Forwarded-For".into()];
        let hooks = Hooks::new(&config, Arc::default()).unwrap();
        let mut headers = wsline::Headers::new();
        for (name, value) in [
            ("cookie", "a=1"),
            ("X-Forwarded-For", "203.0.113.5"),
            ("COOKIE", " b=2 "),
            ("x-forwarded-for", "10.0.0.1"),
            ("Authorization", "Bearer not-forwarded"),
        ] {
            headers.push(name, value);
        }
        let request = Request {
            method: "GET".into(),
            target: "/ws".into(),
            version_minor: 1,
            headers,
        };
        let remote = "127.0.0.1:5000".parse().unwrap();
        let context = hooks.context(remote, &request, None);
        assert_eq!(
            Value::Object(context.headers),
            serde_json::json!({"cookie": "a=1; b=2", "x-forwarded-for": "203.0.113.5, 10.0.0.1"})
        );
    }

    #[test]
    fn claims_are_read_from_the_token() {
        let token = crate::auth::sign(&serde_json::json!({"sub": "ann", "role": "x"}), b"k");
        assert_eq!(claims_json(&token).unwrap()["role"], "x");
        assert!(claims_json("nope").is_none());
    }
}
