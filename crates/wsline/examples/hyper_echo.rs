//! An echo server on hyper 1, HTTP/1.1 and HTTP/2 on one port:
//! `wsline::upgrade` inside a hyper service, a task per WebSocket with
//! `recv` and `send`, `ServerConfig::default()`. hyper_util's auto builder
//! tells the versions apart by the first bytes (cleartext HTTP/2 with
//! prior knowledge, no TLS here), serves HTTP/1.1 with upgrades (101) and
//! HTTP/2 with SETTINGS_ENABLE_CONNECT_PROTOCOL, so that RFC 8441 clients
//! open their WebSockets as extended CONNECT streams (200): the same
//! `wsline::upgrade` call answers both. scripts/test.sh runs Autobahn's
//! server suite against it over HTTP/1.1 (`autobahn-server-hyper`), as
//! against `echo_server` for `accept`.
//!
//! ```text
//! cargo run --release -p wsline --features hyper,http2 --example hyper_echo -- [ADDR | --listen ADDR]
//! ```
//!
//! The default address is 127.0.0.1:9001. Prints `listening on
//! ws://IP:PORT` once bound (port 0 picks a free one) and exits with
//! status 0 on SIGTERM or SIGINT. A request that is not a valid upgrade
//! gets wsline's refusal (400, 405, 426...).

use std::convert::Infallible;
use std::io::Write;
use std::sync::LazyLock;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use wsline::{ServerConfig, UpgradeBody};

const USAGE: &str = "usage: hyper_echo [ADDR | --listen ADDR]   (default 127.0.0.1:9001)";

static CONFIG: LazyLock<ServerConfig> = LazyLock::new(ServerConfig::default);

/// The address to listen on: the first argument, or `--listen ADDR`.
fn listen_address() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok("127.0.0.1:9001".to_owned()),
        [flag, addr] if flag == "--listen" => Ok(addr.clone()),
        [one] => match one.strip_prefix("--listen=") {
            Some(addr) => Ok(addr.to_owned()),
            None if !one.starts_with('-') => Ok(one.clone()),
            None => Err(format!("unknown option {one:?}\n{USAGE}")),
        },
        _ => Err(USAGE.to_owned()),
    }
}

async fn handle(mut request: Request<Incoming>) -> Result<Response<UpgradeBody>, Infallible> {
    let (response, websocket) = match wsline::upgrade(&mut request, &CONFIG) {
        Ok(upgrade) => upgrade,
        Err(refused) => return Ok(refused.into_response()),
    };
    tokio::spawn(async move {
        let mut ws = websocket.await?;
        while let Some(msg) = ws.recv().await {
            ws.send(msg?).await?;
        }
        Ok::<_, wsline::Error>(())
    });
    Ok(response)
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
    let listener = TcpListener::bind(&listen).await?;
    let mut http = auto::Builder::new(TokioExecutor::new());
    // RFC 8441 §3: without this setting clients send no extended CONNECT.
    http.http2().enable_connect_protocol();
    println!("listening on ws://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let accepted = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let tcp = match accepted {
            Ok((tcp, _)) => tcp,
            // Out of descriptors and the like: keep serving.
            Err(e) => {
                eprintln!("accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let http = http.clone();
        tokio::spawn(async move {
            // HTTP/1.1 upgrades need `with_upgrades`; HTTP/2 streams are
            // handed over by `hyper::upgrade::on` either way.
            let _ = http
                .serve_connection_with_upgrades(TokioIo::new(tcp), service_fn(handle))
                .await;
        });
    }
}
