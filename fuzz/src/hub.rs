//! `hub_protocol`: the hub's JSON client protocol decoder on arbitrary text,
//! and its channel pattern matcher.
//!
//! The input (UTF-8, else ignored) goes whole to `protocol::parse`.
//! Invariants, besides no panic:
//! - text that is not a JSON object is refused without an id (a JSON
//!   array was once read positionally as a request: see
//!   regressions/hub_protocol/);
//! - `Ok` requests name a valid channel (1-255 of `A-Za-z0-9_-:.@`), and
//!   the input was a JSON object whose `op` is the request's;
//! - the id returned (on success or error) is the input's `id` field (a
//!   `null` id reads as none);
//! - `publish` data is valid JSON, equal to the input's `data`, and the
//!   fan-out frame `protocol::message` built from it is valid JSON carrying
//!   the same channel and data;
//! - every reply built with the id (`error`, `pong`, `subscribed`,
//!   `published`, ...) is a JSON object whose `id` is that id.
//!
//! Then the input, cut at its first newline into a pattern and a name,
//! goes to `config::pattern_matches`, which must agree with a plain
//! dynamic-programming glob matcher; a valid channel name matches itself
//! and `*`.

use serde_json::Value;
use wsline_hub::config::{pattern_matches, valid_channel};
use wsline_hub::protocol::{self, Request};

fn check_channel(c: &str) {
    assert!(valid_channel(c), "invalid channel accepted: {c:?}");
    assert!((1..=255).contains(&c.len()));
    assert!(c
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_-:.@".contains(&b)));
    assert!(pattern_matches(c, c));
    assert!(pattern_matches("*", c));
}

fn check_reply(reply: &str, id: &Option<Value>) {
    let v: Value =
        serde_json::from_str(reply).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {reply}"));
    let obj = v.as_object().expect("reply is an object");
    assert!(obj.get("op").is_some_and(Value::is_string), "{reply}");
    let same = match (obj.get("id"), id) {
        (Some(got), Some(want)) => same_json(got, want),
        (got, want) => got.is_none() && want.is_none(),
    };
    assert!(same, "id {id:?} echoed as {:?}: {reply}", obj.get("id"));
}

/// JSON equality where floats may differ in the last bit: serde_json's
/// default float parser is not correctly rounded, so reading back the
/// shortest form of a float can land one ulp away (the reply itself is
/// right: `2.4444444444444445e+187` is the correctly rounded value of the
/// 188-digit id the fuzzer sent, yet serde_json reads it back as
/// `2.444444444444444e+187`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || (x - y).abs() <= 4.0 * f64::EPSILON * x.abs(),
                _ => false,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// The `hub_protocol` target.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_patterns(text);
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        // docs/protocol.md: text that is not a JSON object is a
        // bad_request, which cannot carry an id.
        let r = protocol::parse(text);
        assert!(
            matches!(r, Err((None, _))),
            "not a JSON object, yet decoded as {r:?}"
        );
        return;
    }
    // serde_json's Value refuses lone surrogate escapes (`"\udc00"`) and
    // numbers past f64 (`1e999`), which the decoder lets through in fields
    // it ignores or keeps raw (`data`): then the input cannot be read as a
    // Value and only the checks that do not need it apply.
    let input: Option<Value> = serde_json::from_str(text).ok();
    let field = |k: &str| input.as_ref().and_then(|v| v.get(k)).cloned();
    // `"id": null` reads as no id (serde's Option).
    let input_id = field("id").filter(|v| !v.is_null());
    let whole = input.is_some();
    match protocol::parse(text) {
        Err((id, message)) => {
            assert!(!message.is_empty());
            if id.is_some() && whole {
                assert_eq!(id, input_id);
            }
            check_reply(&protocol::error(&id, "bad_request", &message), &id);
        }
        Ok((id, request)) => {
            if let Some(object) = &input {
                assert!(object.is_object());
                assert_eq!(id, input_id);
            }
            let op = field("op");
            let op = op.as_ref().and_then(Value::as_str);
            let check_op = |want: &str| {
                if whole {
                    assert_eq!(op, Some(want));
                }
            };
            match &request {
                Request::Subscribe {
                    channel,
                    since,
                    epoch,
                } => {
                    check_op("subscribe");
                    check_channel(channel);
                    if whole {
                        assert_eq!(*since, field("since").and_then(|v| v.as_u64()));
                        assert_eq!(
                            epoch.as_deref(),
                            field("epoch").as_ref().and_then(Value::as_str)
                        );
                    }
                    let reply = protocol::subscribed(&id, channel, since.unwrap_or(0), "e", true);
                    check_reply(&reply, &id);
                }
                Request::Unsubscribe { channel } => {
                    check_op("unsubscribe");
                    check_channel(channel);
                    check_reply(&protocol::unsubscribed(&id, channel), &id);
                }
                Request::Presence { channel } => {
                    check_op("presence");
                    check_channel(channel);
                    check_reply(&protocol::presence(&id, channel, &[]), &id);
                }
                Request::Publish { channel, data } => {
                    check_op("publish");
                    check_channel(channel);
                    check_reply(&protocol::published(&id, channel, 7), &id);
                    let Ok(value) = serde_json::from_str::<Value>(data.get()) else {
                        assert!(!whole, "publish data is not JSON: {}", data.get());
                        return;
                    };
                    if whole {
                        assert_eq!(Some(&value), field("data").as_ref());
                    }
                    let frame = protocol::message(channel, 7, data, Some("client-1"));
                    let v: Value = serde_json::from_str(&frame)
                        .unwrap_or_else(|e| panic!("fan-out frame is not JSON ({e}): {frame}"));
                    assert_eq!(v["op"], "message");
                    assert_eq!(v["channel"].as_str(), Some(channel.as_str()));
                    assert_eq!(v["data"], value);
                    assert_eq!(v["from"], "client-1");
                }
                Request::Ping => {
                    check_op("ping");
                    check_reply(&protocol::pong(&id), &id);
                }
            }
        }
    }
}

/// Glob with `*` = any run of bytes, by dynamic programming over bytes.
fn reference_glob(p: &[u8], n: &[u8]) -> bool {
    // m[j]: the pattern so far matches n[..j].
    let mut m = vec![false; n.len() + 1];
    m[0] = true;
    for &c in p {
        if c == b'*' {
            for j in 1..=n.len() {
                m[j] = m[j] || m[j - 1];
            }
        } else {
            for j in (1..=n.len()).rev() {
                m[j] = m[j - 1] && n[j - 1] == c;
            }
            m[0] = false;
        }
    }
    m[n.len()]
}

fn check_patterns(text: &str) {
    let (pattern, name) = text.split_once('\n').unwrap_or((text, text));
    if pattern.len() > 512 || name.len() > 512 {
        return;
    }
    assert_eq!(
        pattern_matches(pattern, name),
        reference_glob(pattern.as_bytes(), name.as_bytes()),
        "pattern {pattern:?} name {name:?}"
    );
}
