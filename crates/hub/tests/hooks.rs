//! Backend hooks (docs/hooks.md) over real sockets: the hub on 127.0.0.1
//! and a real HTTP backend on another socket of this process, answering
//! each POST as the test says. Each hook allows, denies (the HTTP status,
//! close code or error code the client sees) and modifies; the backend
//! down, slow, answering 500 or nonsense, under both failure policies;
//! the bound on calls in flight.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client_config, config, start, within, Client};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use wsline::proto::handshake::HandshakeError;
use wsline_hub::auth::sign;
use wsline_hub::config::ChannelOptions;
use wsline_hub::HubConfig;

/// How the backend answers one call.
#[derive(Clone)]
enum Reply {
    /// 200 with this JSON.
    Json(Value),
    /// This status and body.
    Status(u16, &'static str),
    /// No answer until the hub gives up (the connection is held open).
    Hang,
}

type Answer = dyn Fn(&str, &Value) -> Reply + Send + Sync;

/// A hook backend over HTTP on 127.0.0.1: reads each POST (one per
/// connection), reports its path and JSON body, answers with what the
/// answer function says for them.
struct Backend {
    base: String,
    answer: Arc<Mutex<Arc<Answer>>>,
    calls: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Backend {
    async fn start(answer: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let answer: Arc<Mutex<Arc<Answer>>> = Arc::new(Mutex::new(Arc::new(answer)));
        let (tx, calls) = mpsc::unbounded_channel();
        let answers = answer.clone();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let tx = tx.clone();
                let answer = answers.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Some((head, body)) = common::read_request(&mut tcp).await else {
                        return;
                    };
                    assert!(head.starts_with("POST /"), "{head}");
                    assert!(
                        head.to_ascii_lowercase()
                            .contains("content-type: application/json"),
                        "{head}"
                    );
                    let path = head.split(' ').nth(1).unwrap().to_owned();
                    let body: Value = serde_json::from_slice(&body).unwrap();
                    let reply = answer(&path, &body);
                    let _ = tx.send((path, body));
                    let (status, body) = match reply {
                        Reply::Json(v) => (200, v.to_string()),
                        Reply::Status(s, b) => (s, b.to_owned()),
                        Reply::Hang => {
                            // Until the hub closes its end.
                            let _ = tcp.read(&mut [0u8; 1]).await;
                            return;
                        }
                    };
                    let _ = tcp
                        .write_all(
                            format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                                body.len()
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        Backend {
            base,
            answer,
            calls,
        }
    }

    /// Answers with `answer` from now on.
    fn answer(&self, answer: impl Fn(&str, &Value) -> Reply + Send + Sync + 'static) {
        *self.answer.lock().unwrap() = Arc::new(answer);
    }

    /// The next call the backend received: its path and body.
    async fn call(&mut self) -> (String, Value) {
        within("a hook call", self.calls.recv())
            .await
            .expect("the backend runs")
    }

    /// Proves no call came (beyond those already read).
    fn no_more_calls(&mut self) {
        if let Ok(call) = self.calls.try_recv() {
            panic!("an unexpected hook call: {call:?}");
        }
    }
}

/// A URL where nothing listens.
async fn nothing_listens() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// The test config with every hook at `backend` (`/connect`, `/subscribe`,
/// `/publish`), hooked channels `hooked:*`, and `forward_headers`.
fn hooked(backend: &str) -> HubConfig {
    let mut c = config();
    c.hooks.connect_url = Some(format!("{backend}/connect"));
    c.hooks.subscribe_url = Some(format!("{backend}/subscribe"));
    c.hooks.publish_url = Some(format!("{backend}/publish"));
    c.hooks.forward_headers = vec!["Cookie".into(), "authorization".into()];
    c.channels.insert(
        "hooked:*".into(),
        ChannelOptions {
            subscribe_hook: Some(true),
            publish_hook: Some(true),
            ..Default::default()
        },
    );
    c
}

/// The HTTP status and body of a refused `/ws` handshake to `url`.
async fn refused_status(url: &str) -> (u16, String) {
    let err = within("connect", wsline::connect_with(url, &client_config()))
        .await
        .expect_err("the handshake is refused");
    match err {
        wsline::Error::Handshake(HandshakeError::Rejected { status, body, .. }) => {
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        other => panic!("not an HTTP refusal: {other}"),
    }
}

fn hook_count(m: &common::Metrics, hook: &str, result: &str) -> f64 {
    m.value(&format!(
        "wsline_hook_requests_total{{hook=\"{hook}\",result=\"{result}\"}}"
    ))
}

#[tokio::test]
async fn connect_hook_allows_and_is_told_who_connects() {
    let mut backend = Backend::start(|_, _| Reply::Json(json!({}))).await;
    let mut c = hooked(&backend.base);
    c.jwt_secret = Some("s".into());
    let hub = start(c).await;
    let token = sign(&json!({"sub": "ann", "role": "editor"}), b"s");
    let mut config = client_config();
    config.headers.push("Cookie", "session=abc");
    config.headers.push("Authorization", "Bearer xyz");
    config.headers.push("X-Secret", "not forwarded");
    let mut ann = Client::connect_with(&hub.url(&format!("?token={token}")), &config).await;
    let (path, call) = backend.call().await;
    assert_eq!(path, "/connect");
    let remote = call["remote"].as_str().expect("remote");
    assert!(remote.starts_with("127.0.0.1:"), "{call}");
    assert_eq!(
        call,
        json!({
            "hook": "connect",
            "client": ann.id,
            "user": "ann",
            "remote": remote,
            "headers": {"cookie": "session=abc", "authorization": "Bearer xyz"},
            "claims": {"sub": "ann", "role": "editor"},
        })
    );
    assert_eq!(ann.welcome["user"], "ann");
    ann.expect_nothing_pending().await;
    let m = hub.metrics().await;
    assert_eq!(hook_count(&m, "connect", "allow"), 1.0);
    assert_eq!(hook_count(&m, "connect", "deny"), 0.0);
}

#[tokio::test]
async fn connect_hook_denies_with_an_http_status() {
    let backend = Backend::start(|_, _| {
        Reply::Json(json!({"deny": {"status": 401, "message": "no session"}}))
    })
    .await;
    let hub = start(hooked(&backend.base)).await;
    let (status, body) = refused_status(&hub.url("")).await;
    assert_eq!((status, body.trim()), (401, "no session"));
    // Neither status nor close: 403.
    backend.answer(|_, _| Reply::Json(json!({"deny": {}})));
    assert_eq!(refused_status(&hub.url("")).await.0, 403);
    let m = hub.metrics().await;
    assert_eq!(hook_count(&m, "connect", "deny"), 2.0);
    assert_eq!(m.value("wsline_connections"), 0.0);
}

#[tokio::test]
async fn connect_hook_denies_with_a_close_code_after_the_upgrade() {
    let backend =
        Backend::start(|_, _| Reply::Json(json!({"deny": {"close": 4403, "message": "banned"}})))
            .await;
    let hub = start(hooked(&backend.base)).await;
    let (mut ws, _) = within(
        "connect",
        wsline::connect_with(&hub.url(""), &client_config()),
    )
    .await
    .expect("upgraded");
    let end = within("the close", ws.recv()).await;
    let termination = match end {
        Some(Err(e)) => e.termination().expect("a close").clone(),
        None => ws.termination().expect("a close").clone(),
        Some(Ok(m)) => panic!("a message before the close: {m:?}"),
    };
    assert_eq!(
        (termination.code().as_u16(), termination.reason()),
        (4403, "banned")
    );
}

#[tokio::test]
async fn connect_hook_sets_the_user_and_subscribes_the_client() {
    let mut backend = Backend::start(|_, _| {
        Reply::Json(json!({"user": "bob", "subscribe": ["inbox:bob", "hooked:news"]}))
    })
    .await;
    let hub = start(hooked(&backend.base)).await;
    let mut bob = hub.client().await;
    assert_eq!(bob.welcome["user"], "bob");
    // Subscribed on the backend's word: no subscribe hook asked.
    for channel in ["inbox:bob", "hooked:news"] {
        let reply = bob.recv().await;
        assert_eq!(
            (&reply["op"], &reply["channel"], reply.get("id")),
            (&json!("subscribed"), &json!(channel), None),
            "{reply}"
        );
    }
    hub.api_publish("inbox:bob", json!("hello")).await;
    let message = bob.recv().await;
    assert_eq!(
        (&message["op"], &message["data"]),
        (&json!("message"), &json!("hello"))
    );
    let m = hub.metrics().await;
    assert_eq!(hook_count(&m, "subscribe", "allow"), 0.0);
    // The publish hook sees the backend's user.
    let _ = backend.call().await;
    backend.answer(|_, _| Reply::Json(json!({})));
    bob.publish("hooked:news", json!(1)).await;
    let (path, call) = backend.call().await;
    assert_eq!((path.as_str(), &call["user"]), ("/publish", &json!("bob")));
}

#[tokio::test]
async fn subscribe_hook_allows_and_denies_with_the_backends_code() {
    let mut backend = Backend::start(|path, call| match (path, call["channel"].as_str()) {
        ("/subscribe", Some("hooked:secret")) => {
            Reply::Json(json!({"deny": {"code": "not_a_member", "message": "join the team first"}}))
        }
        ("/subscribe", Some("hooked:closed")) => Reply::Json(json!({"deny": {}})),
        _ => Reply::Json(json!({})),
    })
    .await;
    let mut config = client_config();
    config.headers.push("Cookie", "a=1");
    let hub = start(hooked(&backend.base)).await;
    let mut ann = Client::connect_with(&hub.url(""), &config).await;
    assert_eq!(backend.call().await.0, "/connect");

    let reply = ann
        .request(json!({"op": "subscribe", "channel": "hooked:open", "id": 1}))
        .await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
    let (path, call) = backend.call().await;
    assert_eq!(path, "/subscribe");
    assert_eq!(
        (
            &call["hook"],
            &call["channel"],
            &call["client"],
            &call["headers"]
        ),
        (
            &json!("subscribe"),
            &json!("hooked:open"),
            &json!(ann.id),
            &json!({"cookie": "a=1"})
        )
    );
    assert!(call["remote"].as_str().unwrap().starts_with("127.0.0.1:"));

    let reply = ann
        .request(json!({"op": "subscribe", "channel": "hooked:secret", "id": 2}))
        .await;
    assert_eq!(
        reply,
        json!({"op": "error", "id": 2, "code": "not_a_member", "message": "join the team first"})
    );
    let reply = ann
        .request(json!({"op": "subscribe", "channel": "hooked:closed", "id": 3}))
        .await;
    assert_eq!(
        (&reply["code"], &reply["id"]),
        (&json!("forbidden"), &json!(3))
    );
    // A channel no pattern opts in: the backend is not asked.
    let _ = backend.call().await;
    let _ = backend.call().await;
    ann.subscribe("plain").await;
    backend.no_more_calls();
    // Denied means not subscribed: a publication does not arrive.
    hub.api_publish("hooked:secret", json!(1)).await;
    ann.expect_nothing_pending().await;
    let m = hub.metrics().await;
    assert_eq!(hook_count(&m, "subscribe", "allow"), 1.0);
    assert_eq!(hook_count(&m, "subscribe", "deny"), 2.0);
}

#[tokio::test]
async fn publish_hook_allows_denies_and_replaces_the_data() {
    let mut backend = Backend::start(|path, call| match path {
        "/publish" if call["data"]["text"] == "spam" => {
            Reply::Json(json!({"deny": {"message": "no spam"}}))
        }
        "/publish" if call["data"]["text"] == "darn" => {
            Reply::Json(json!({"data": {"text": "d**n", "checked": true}}))
        }
        _ => Reply::Json(json!({})),
    })
    .await;
    let hub = start(hooked(&backend.base)).await;
    let mut reader = hub.client().await;
    let mut writer = hub.client().await;
    reader.subscribe("hooked:room").await;
    writer.publish("hooked:room", json!({"text": "hi"})).await;
    assert_eq!(reader.recv().await["data"], json!({"text": "hi"}));
    let calls: Vec<(String, Value)> = vec![
        backend.call().await,
        backend.call().await,
        backend.call().await,
        backend.call().await,
    ];
    let publish = &calls.iter().find(|(p, _)| p == "/publish").unwrap().1;
    assert_eq!(
        (&publish["channel"], &publish["data"], &publish["client"]),
        (
            &json!("hooked:room"),
            &json!({"text": "hi"}),
            &json!(writer.id)
        )
    );

    let reply = writer
        .request(
            json!({"op": "publish", "channel": "hooked:room", "data": {"text": "spam"}, "id": 7}),
        )
        .await;
    assert_eq!(
        reply,
        json!({"op": "error", "id": 7, "code": "forbidden", "message": "no spam"})
    );
    writer.publish("hooked:room", json!({"text": "darn"})).await;
    assert_eq!(
        reader.recv().await["data"],
        json!({"text": "d**n", "checked": true}),
        "the backend's data, not the client's"
    );
    reader.expect_nothing_pending().await;
    let m = hub.metrics().await;
    assert_eq!(hook_count(&m, "publish", "allow"), 2.0);
    assert_eq!(hook_count(&m, "publish", "deny"), 1.0);
}

/// The ways a backend fails, and the metrics result each counts as.
async fn failures() -> Vec<(&'static str, String, Option<Reply>, &'static str)> {
    vec![
        ("down", nothing_listens().await, None, "error"),
        ("slow", String::new(), Some(Reply::Hang), "timeout"),
        (
            "500",
            String::new(),
            Some(Reply::Status(500, "{}")),
            "error",
        ),
        (
            "malformed",
            String::new(),
            Some(Reply::Status(200, "{\"allow\": tru")),
            "error",
        ),
        (
            "not an answer",
            String::new(),
            Some(Reply::Json(json!({"dney": {}}))),
            "error",
        ),
    ]
}

#[tokio::test]
async fn failed_hooks_refuse_by_default_and_allow_with_fail_open() {
    for (what, down_url, reply, result) in failures().await {
        for fail_open in [false, true] {
            let case = format!("{what}, fail_open = {fail_open}");
            let backend = match reply.clone() {
                Some(r) => Some(Backend::start(move |_, _| r.clone()).await),
                None => None,
            };
            let base = backend
                .as_ref()
                .map_or(down_url.clone(), |b| b.base.clone());
            let mut c = hooked(&base);
            c.hooks.timeout = 0.3;
            c.hooks.fail_open = fail_open;
            // The connect hook alone first: it would refuse everyone.
            let mut only_connect = c.clone();
            only_connect.hooks.subscribe_url = None;
            only_connect.hooks.publish_url = None;
            only_connect.channels.clear();
            let hub = start(only_connect).await;
            if fail_open {
                let mut client = hub.client().await;
                client.expect_nothing_pending().await;
            } else {
                let (status, _) = refused_status(&hub.url("")).await;
                assert_eq!(status, 503, "{case}");
            }
            let m = hub.metrics().await;
            assert_eq!(hook_count(&m, "connect", result), 1.0, "{case}");
            drop(hub);

            c.hooks.connect_url = None;
            let hub = start(c).await;
            let mut client = hub.client().await;
            let sub = client
                .request(json!({"op": "subscribe", "channel": "hooked:a", "id": 1}))
                .await;
            let publ = client
                .request(json!({"op": "publish", "channel": "hooked:a", "data": 1, "id": 2}))
                .await;
            if fail_open {
                assert_eq!(sub["op"], "subscribed", "{case}: {sub}");
                assert_eq!(publ["op"], "published", "{case}: {publ}");
                assert_eq!(client.recv().await["data"], 1, "{case}: the client's data");
            } else {
                assert_eq!(
                    (&sub["op"], &sub["code"], &sub["id"]),
                    (&json!("error"), &json!("unavailable"), &json!(1)),
                    "{case}: {sub}"
                );
                assert_eq!(
                    (&publ["op"], &publ["code"], &publ["id"]),
                    (&json!("error"), &json!("unavailable"), &json!(2)),
                    "{case}: {publ}"
                );
            }
            // The connection lives on.
            client.expect_nothing_pending().await;
            let m = hub.metrics().await;
            assert_eq!(hook_count(&m, "subscribe", result), 1.0, "{case}");
            assert_eq!(hook_count(&m, "publish", result), 1.0, "{case}");
            assert_eq!(m.value("wsline_connections"), 1.0, "{case}");
        }
    }
}

#[tokio::test]
async fn fail_open_can_be_set_per_hook() {
    let url = nothing_listens().await;
    let mut c = hooked(&url.replace("/hook", ""));
    c.hooks.connect_url = None;
    c.hooks.subscribe_fail_open = Some(true);
    let hub = start(c).await;
    let mut client = hub.client().await;
    client.subscribe("hooked:a").await;
    let reply = client
        .request(json!({"op": "publish", "channel": "hooked:a", "data": 1}))
        .await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
}

#[tokio::test]
async fn calls_past_max_in_flight_are_refused_at_once() {
    let mut backend = Backend::start(|_, _| Reply::Hang).await;
    let mut c = hooked(&backend.base);
    c.hooks.connect_url = None;
    c.hooks.max_in_flight = 1;
    c.hooks.timeout = 3.0;
    let hub = start(c).await;
    let mut waiting = hub.client().await;
    let mut refused = hub.client().await;
    waiting
        .send(json!({"op": "subscribe", "channel": "hooked:a", "id": "slow"}))
        .await;
    // The first call is in flight, held by the backend.
    assert_eq!(backend.call().await.0, "/subscribe");
    let asked = Instant::now();
    let reply = refused
        .request(json!({"op": "subscribe", "channel": "hooked:b", "id": "fast"}))
        .await;
    assert_eq!(
        (&reply["code"], &reply["id"]),
        (&json!("unavailable"), &json!("fast")),
        "{reply}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "refused at once, not after the timeout: {:?}",
        asked.elapsed()
    );
    backend.no_more_calls();
    let m = hub.metrics().await;
    assert_eq!(hook_count(&m, "subscribe", "overload"), 1.0);
    // The first ends at the timeout, and frees its place.
    let reply = waiting.recv().await;
    assert_eq!(reply["code"], "unavailable", "{reply}");
    backend.answer(|_, _| Reply::Json(json!({})));
    refused.subscribe("hooked:b").await;
    let m = hub.metrics().await;
    assert_eq!(hook_count(&m, "subscribe", "timeout"), 1.0);
    assert_eq!(hook_count(&m, "subscribe", "allow"), 1.0);
}

#[tokio::test]
async fn connect_hook_is_not_asked_about_a_request_the_upgrade_refuses() {
    let mut backend = Backend::start(|_, _| Reply::Json(json!({}))).await;
    let mut c = hooked(&backend.base);
    c.server.allowed_origins = vec!["https://good.example".into()];
    let hub = start(c).await;
    let mut config = client_config();
    config.headers.push("Origin", "https://evil.example");
    let err = within("connect", wsline::connect_with(&hub.url(""), &config))
        .await
        .expect_err("refused");
    assert_eq!(err.http_status(), Some(403), "{err}");
    let reply = common::http(hub.addr, "GET", "/ws", &[], None).await;
    assert_eq!(reply.status, 400, "not a WebSocket request: {reply:?}");
    backend.no_more_calls();
    hub.client().await;
    assert_eq!(backend.call().await.0, "/connect");
}

/// The example backend of docs/hooks.md, a Python process, behind a hub
/// configured as the page says: skipped (with a note) without python3.
#[tokio::test]
async fn the_example_backend_of_the_docs_works() {
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/hooks.md"),
    )
    .expect("docs/hooks.md");
    let script = docs
        .split_once("```python\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("docs/hooks.md has a Python example")
        .0;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    /// Kills the backend when the test ends, passed or not.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .spawn();
    let Ok(_child) = child.map(Killed) else {
        eprintln!("python3 not found: the example backend is not tested");
        return;
    };
    within("the example backend to listen", async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let mut c = config();
    let base = format!("http://127.0.0.1:{port}/hooks");
    c.hooks.connect_url = Some(format!("{base}/connect"));
    c.hooks.subscribe_url = Some(format!("{base}/subscribe"));
    c.hooks.publish_url = Some(format!("{base}/publish"));
    c.hooks.forward_headers = vec!["cookie".into()];
    c.hooks.timeout = 5.0;
    c.channels.insert(
        "team:*".into(),
        ChannelOptions {
            subscribe_hook: Some(true),
            publish_hook: Some(true),
            ..Default::default()
        },
    );
    let hub = start(c).await;
    let (status, body) = refused_status(&hub.url("")).await;
    assert_eq!((status, body.trim()), (401, "log in first"));
    let mut config = client_config();
    config.headers.push("Cookie", "theme=dark; session=abc");
    let mut ann = Client::connect_with(&hub.url(""), &config).await;
    assert_eq!(ann.welcome["user"], "ann");
    let inbox = ann.recv().await;
    assert_eq!(
        (&inbox["op"], &inbox["channel"]),
        (&json!("subscribed"), &json!("inbox:ann"))
    );
    let reply = ann
        .request(json!({"op": "subscribe", "channel": "team:blue"}))
        .await;
    assert_eq!(reply["code"], "not_a_member", "{reply}");
    ann.subscribe("team:red").await;
    ann.publish("team:red", json!({"text": "oh darn it"})).await;
    assert_eq!(ann.recv().await["data"], json!({"text": "oh **** it"}));
}
