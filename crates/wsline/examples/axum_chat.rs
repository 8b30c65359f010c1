//! A tiny chat on axum 0.8: `GET /` serves a page, `GET /ws` is the
//! WebSocket route (`wsline::axum::WebSocketUpgrade`), and every text
//! message a client sends is broadcast to every connected client (itself
//! included) through a tokio broadcast channel.
//!
//! ```text
//! cargo run -p wsline --features axum --example axum_chat -- [ADDR | --listen ADDR]
//! ```
//!
//! The default address is 127.0.0.1:3000. Prints `listening on
//! http://IP:PORT` once bound (port 0 picks a free one): open it in two
//! browser tabs. Exits with status 0 on SIGTERM or SIGINT.

use std::io::Write;

use axum::extract::State;
use axum::response::{Html, Response};
use axum::routing::get;
use axum::{Extension, Router};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use wsline::axum::WebSocketUpgrade;
use wsline::{HyperWebSocket, Message, ServerConfig, Utf8Bytes};

const USAGE: &str = "usage: axum_chat [ADDR | --listen ADDR]   (default 127.0.0.1:3000)";

/// The chat room: one channel every session publishes to and reads from.
#[derive(Clone)]
struct Room {
    messages: broadcast::Sender<Utf8Bytes>,
}

/// The address to listen on: the first argument, or `--listen ADDR`.
fn listen_address() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok("127.0.0.1:3000".to_owned()),
        [flag, addr] if flag == "--listen" => Ok(addr.clone()),
        [one] => match one.strip_prefix("--listen=") {
            Some(addr) => Ok(addr.to_owned()),
            None if !one.starts_with('-') => Ok(one.clone()),
            None => Err(format!("unknown option {one:?}\n{USAGE}")),
        },
        _ => Err(USAGE.to_owned()),
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn websocket(State(room): State<Room>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |ws| session(ws, room))
}

/// One client: its text messages go to the room, the room's to it.
async fn session(mut ws: HyperWebSocket, room: Room) {
    let mut incoming = room.messages.subscribe();
    loop {
        tokio::select! {
            received = ws.recv() => match received {
                Some(Ok(Message::Text(text))) => {
                    // No receiver only means no client is left to read it.
                    let _ = room.messages.send(text);
                }
                Some(Ok(Message::Binary(_))) => {}
                Some(Err(_)) | None => break,
            },
            published = incoming.recv() => match published {
                Ok(text) => {
                    if ws.send(Message::Text(text)).await.is_err() {
                        break;
                    }
                }
                // A client too slow for the room misses what it could not take.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => break,
            },
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = match listen_address() {
        Ok(addr) => addr,
        Err(usage) => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // Chat messages are short: a 64 KiB cap instead of the default.
    let mut config = ServerConfig::default();
    config.protocol.max_message_size = 64 * 1024;
    let room = Room {
        messages: broadcast::channel(256).0,
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/ws", get(websocket))
        .layer(Extension(config))
        .with_state(room);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await?;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wsline chat (axum)</title>
<style>
  body { font: 16px system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
  #log { border: 1px solid #ccc; height: 20em; overflow-y: auto; padding: .5em; }
  #log p { margin: .2em 0; }
  form { display: flex; gap: .5em; margin-top: .5em; }
  #text { flex: 1; }
</style>
</head>
<body>
<h1>wsline chat</h1>
<p id="status">connecting…</p>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" placeholder="say something"><button>Send</button></form>
<script>
  const log = document.getElementById("log");
  const status = document.getElementById("status");
  const text = document.getElementById("text");
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.onopen = () => { status.textContent = "connected"; };
  ws.onclose = (e) => { status.textContent = `closed (${e.code})`; };
  ws.onmessage = (e) => {
    const p = document.createElement("p");
    p.textContent = e.data;
    log.append(p);
    log.scrollTop = log.scrollHeight;
  };
  document.getElementById("form").onsubmit = (e) => {
    e.preventDefault();
    if (text.value && ws.readyState === WebSocket.OPEN) ws.send(text.value);
    text.value = "";
  };
</script>
</body>
</html>
"#;
