//! The client protocol: one JSON object per text message (docs/protocol.md).
//!
//! Owns decoding requests (with the `bad_request` reasons) and encoding
//! every reply and event. Fan-out messages are encoded once, with the
//! published data kept as the raw JSON it arrived as.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::config::valid_channel;

/// A decoded client request.
#[derive(Debug)]
pub enum Request {
    /// `{"op":"subscribe","channel":C,"since":N?,"epoch":E?}`
    Subscribe {
        /// The channel.
        channel: String,
        /// Recover messages after this offset.
        since: Option<u64>,
        /// The epoch `since` belongs to.
        epoch: Option<String>,
    },
    /// `{"op":"unsubscribe","channel":C}`
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// `{"op":"publish","channel":C,"data":ANY}`
    Publish {
        /// The channel.
        channel: String,
        /// The data, as raw JSON.
        data: Box<RawValue>,
    },
    /// `{"op":"presence","channel":C}`
    Presence {
        /// The channel.
        channel: String,
    },
    /// `{"op":"ping"}`
    Ping,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    op: Option<&'a RawValue>,
    id: Option<Value>,
    channel: Option<Value>,
    since: Option<Value>,
    epoch: Option<Value>,
    /// `Some` whenever the key is there, `null` included: `Option<&RawValue>`
    /// alone would read `"data":null` as a missing key.
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

/// Any JSON value, `null` too, as present.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue as Deserialize>::deserialize(d).map(Some)
}

/// A request that cannot be served: `(id, message)` for a `bad_request`.
pub type BadRequest = (Option<Value>, String);

/// Decodes one client message. On error, the request's id (when it could
/// be read) and what is wrong.
pub fn parse(text: &str) -> Result<(Option<Value>, Request), BadRequest> {
    // A derived struct would also accept a JSON array, read positionally.
    if !text.trim_start().starts_with('{') {
        return Err((None, "malformed request: expected a JSON object".to_owned()));
    }
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| (None, format!("malformed JSON object: {e}")))?;
    let id = env.id.clone();
    let bad = |m: String| (id.clone(), m);
    let op: String = match env.op {
        Some(raw) => {
            serde_json::from_str(raw.get()).map_err(|_| bad("\"op\" must be a string".into()))?
        }
        None => return Err(bad("missing field \"op\"".into())),
    };
    let channel = || -> Result<String, BadRequest> {
        match &env.channel {
            None => Err(bad("missing field \"channel\"".into())),
            Some(Value::String(c)) if valid_channel(c) => Ok(c.clone()),
            Some(_) => Err(bad(
                "invalid channel name: 1-255 characters of A-Za-z0-9_-:.@".into(),
            )),
        }
    };
    let request = match op.as_str() {
        "subscribe" => {
            let since = match &env.since {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .ok_or_else(|| bad("\"since\" must be a non-negative integer".into()))?,
                ),
            };
            let epoch = match &env.epoch {
                None | Some(Value::Null) => None,
                Some(Value::String(e)) => Some(e.clone()),
                Some(_) => return Err(bad("\"epoch\" must be a string".into())),
            };
            Request::Subscribe {
                channel: channel()?,
                since,
                epoch,
            }
        }
        "unsubscribe" => Request::Unsubscribe {
            channel: channel()?,
        },
        "publish" => {
            let channel = channel()?;
            let data = env
                .data
                .ok_or_else(|| bad("missing field \"data\"".into()))?;
            Request::Publish {
                channel,
                data: data.to_owned(),
            }
        }
        "presence" => Request::Presence {
            channel: channel()?,
        },
        "ping" => Request::Ping,
        other => return Err(bad(format!("unknown op {other:?}"))),
    };
    Ok((id, request))
}

fn with_id(mut v: Value, id: &Option<Value>) -> String {
    if let (Some(id), Value::Object(map)) = (id, &mut v) {
        map.insert("id".into(), id.clone());
    }
    v.to_string()
}

/// A presence member.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Member {
    /// The connection's client ID.
    pub client: String,
    /// The authenticated user, if any.
    pub user: Option<String>,
}

impl Member {
    /// `{"client":ID,"user":USER_OR_NULL}`
    pub fn to_json(&self) -> Value {
        json!({"client": self.client, "user": self.user})
    }
}

/// `{"op":"welcome",...}`
pub fn welcome(client: &str, user: Option<&str>) -> String {
    json!({"op": "welcome", "client": client, "user": user}).to_string()
}

/// `{"op":"subscribed",...}`
pub fn subscribed(
    id: &Option<Value>,
    channel: &str,
    offset: u64,
    epoch: &str,
    recovered: bool,
) -> String {
    with_id(
        json!({"op": "subscribed", "channel": channel, "offset": offset, "epoch": epoch, "recovered": recovered}),
        id,
    )
}

/// `{"op":"unsubscribed",...}`
pub fn unsubscribed(id: &Option<Value>, channel: &str) -> String {
    with_id(json!({"op": "unsubscribed", "channel": channel}), id)
}

/// `{"op":"published",...}`
pub fn published(id: &Option<Value>, channel: &str, offset: u64) -> String {
    with_id(
        json!({"op": "published", "channel": channel, "offset": offset}),
        id,
    )
}

/// `{"op":"presence",...}`
pub fn presence(id: &Option<Value>, channel: &str, members: &[Member]) -> String {
    let members: Vec<Value> = members.iter().map(Member::to_json).collect();
    with_id(
        json!({"op": "presence", "channel": channel, "members": members}),
        id,
    )
}

/// `{"op":"pong"}`
pub fn pong(id: &Option<Value>) -> String {
    with_id(json!({"op": "pong"}), id)
}

/// `{"op":"join"|"leave",...}`
pub fn presence_event(op: &str, channel: &str, member: &Member) -> String {
    json!({"op": op, "channel": channel, "member": member.to_json()}).to_string()
}

/// `{"op":"error",...}`
pub fn error(id: &Option<Value>, code: &str, message: &str) -> String {
    with_id(json!({"op": "error", "code": code, "message": message}), id)
}

/// `{"op":"message","channel":C,"offset":N,"data":ANY,"from":FROM}`, with
/// `data` copied as the raw JSON it was published as.
pub fn message(channel: &str, offset: u64, data: &RawValue, from: Option<&str>) -> String {
    let channel = Value::from(channel);
    let from = from.map_or(Value::Null, Value::from);
    format!(
        r#"{{"op":"message","channel":{channel},"offset":{offset},"data":{},"from":{from}}}"#,
        data.get()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_op() {
        let (id, r) =
            parse(r#"{"op":"subscribe","channel":"a","since":3,"epoch":"e","id":7}"#).unwrap();
        assert_eq!(id, Some(json!(7)));
        assert!(matches!(
            r,
            Request::Subscribe { ref channel, since: Some(3), epoch: Some(ref e) } if channel == "a" && e == "e"
        ));
        let (_, r) = parse(r#"{"op":"publish","channel":"a","data":{"x":[1,2]}}"#).unwrap();
        match r {
            Request::Publish { data, .. } => assert_eq!(data.get(), r#"{"x":[1,2]}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(r#"{"op":"ping"}"#).unwrap().1,
            Request::Ping
        ));
    }

    #[test]
    fn publish_data_null_is_data_not_a_missing_field() {
        for (text, want) in [
            (r#"{"op":"publish","channel":"a","data":null}"#, "null"),
            (
                r#"{"op":"publish","channel":"a","data": null ,"id":2}"#,
                "null",
            ),
            (r#"{"op":"publish","channel":"a","data":false}"#, "false"),
            (r#"{"op":"publish","channel":"a","data":0}"#, "0"),
            (r#"{"op":"publish","channel":"a","data":""}"#, r#""""#),
        ] {
            match parse(text) {
                Ok((_, Request::Publish { data, .. })) => assert_eq!(data.get(), want, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_requests_keep_the_id() {
        for (text, want) in [
            ("nope", "malformed"),
            (r#"{"id":1}"#, "missing field \"op\""),
            (r#"{"op":"dance","id":1}"#, "unknown op"),
            (r#"{"op":"subscribe","id":1}"#, "missing field \"channel\""),
            (
                r#"{"op":"subscribe","channel":"bad name","id":1}"#,
                "invalid channel",
            ),
            (
                r#"{"op":"publish","channel":"a","id":1}"#,
                "missing field \"data\"",
            ),
        ] {
            let (id, message) = parse(text).unwrap_err();
            assert!(message.contains(want), "{text}: {message}");
            if text.contains("\"id\"") {
                assert_eq!(id, Some(json!(1)));
            }
        }
    }

    #[test]
    fn message_is_valid_json_with_raw_data() {
        let data = RawValue::from_string(r#"{"a":"b\"c"}"#.into()).unwrap();
        let m = message("ch", 5, &data, Some("u\"ser"));
        let v: Value = serde_json::from_str(&m).unwrap();
        assert_eq!(
            v,
            json!({"op":"message","channel":"ch","offset":5,"data":{"a":"b\"c"},"from":"u\"ser"})
        );
    }
}
