//! `wsline connect URL`: an interactive client.
//!
//! Owns the stdin → messages and messages → stdout plumbing, and how the
//! end of the connection becomes an exit code: 0 after a normal end
//! (`Termination::is_normal`: 1000, 1001 or an empty Close, 1005),
//! non-zero otherwise. Which proxy it goes through: `--proxy`, else the
//! environment as curl reads it (`wsline::ProxyChoice::FromEnv`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use wsline::{ClientConfig, CloseCode, Message, NoProxy, Proxy, ProxyChoice};

use crate::secs::{optional, parse_secs};

/// Options of `wsline connect`.
#[derive(Args, Debug)]
pub(crate) struct ConnectArgs {
    /// ws:// or wss:// URL.
    url: String,
    /// Subprotocol to offer (repeatable), in preference order.
    #[arg(long, value_name = "NAME")]
    protocol: Vec<String>,
    /// Extra request header, 'Name: value' (repeatable).
    #[arg(long, value_name = "'Name: value'")]
    header: Vec<String>,
    /// PEM file of trusted certificates for wss:// (a CA or the server's own).
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Do not verify the server's certificate (testing only).
    #[arg(long)]
    insecure: bool,
    /// Do not offer permessage-deflate.
    #[arg(long)]
    no_compression: bool,
    /// Seconds between keepalive pings (0 disables).
    #[arg(long, value_name = "SECS", default_value = "20", value_parser = parse_secs)]
    ping_interval: Duration,
    /// Connect through this proxy: http://[USER:PASSWORD@]HOST[:PORT] (HTTP
    /// CONNECT, Basic credentials), socks5://… (SOCKS5, the name resolved
    /// here) or socks5h://… (the proxy resolves it); the port defaults to
    /// 1080; percent-encode '@' and ':' in credentials. Without --proxy,
    /// as curl: for wss:// wss_proxy, https_proxy or HTTPS_PROXY, for ws://
    /// ws_proxy or http_proxy (lowercase only), then ALL_PROXY; hosts in
    /// NO_PROXY go direct. --proxy '' connects directly.
    #[arg(long, value_name = "URL", verbatim_doc_comment)]
    proxy: Option<String>,
    /// Hosts that go direct, even with --proxy: a comma-separated list in
    /// NO_PROXY's syntax (example.com also matches its subdomains;
    /// IP addresses and CIDR networks; '*' for all). Replaces NO_PROXY.
    #[arg(long, value_name = "LIST", verbatim_doc_comment)]
    noproxy: Option<String>,
}

fn client_config(args: &ConnectArgs) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::default();
    config.protocols = args.protocol.clone();
    for h in &args.header {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("--header {h:?}: expected 'Name: value'"));
        };
        let name = name.trim();
        if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(format!("--header {h:?}: invalid header name"));
        }
        config.headers.push(name, value.trim());
    }
    config.tls.ca_file = args.ca.clone();
    config.tls.insecure = args.insecure;
    config.protocol.ping_interval = optional(args.ping_interval);
    if args.no_compression {
        config.deflate = None;
    }
    config.proxy = match args.proxy.as_deref() {
        None => ProxyChoice::FromEnv,
        Some(url) if url.trim().is_empty() => ProxyChoice::Direct,
        Some(url) => ProxyChoice::Use(Proxy::parse(url).map_err(|e| format!("--proxy: {e}"))?),
    };
    config.no_proxy = args.noproxy.as_deref().map(NoProxy::parse);
    Ok(config)
}

pub(crate) async fn run(args: ConnectArgs) -> i32 {
    let config = match client_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let (ws, _response) = match wsline::connect_with(&args.url, &config).await {
        Ok(c) => c,
        Err(e) => {
            match e.http_status() {
                Some(status) => {
                    let body = match &e {
                        wsline::Error::Handshake(
                            wsline::proto::handshake::HandshakeError::Rejected { body, .. },
                        ) => String::from_utf8_lossy(body).trim().to_owned(),
                        _ => String::new(),
                    };
                    eprintln!("error: handshake refused: HTTP {status}: {body}");
                }
                None => eprintln!("error: {e}"),
            }
            return 1;
        }
    };
    let (mut sink, mut stream) = ws.split();

    let send_stdin = async move {
        let mut stdin = BufReader::new(tokio::io::stdin());
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line).await {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if sink.send(Message::text(text)).await.is_err() {
                        // The connection is closing; the reader reports why.
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("error: reading stdin: {e}");
                    break;
                }
            }
        }
        let _ = sink.close(CloseCode::NORMAL, "").await;
        // Keep the task (and the write half) alive until the reader ends.
        std::future::pending::<()>().await
    };

    let receive = async {
        let mut stdout = tokio::io::stdout();
        while let Some(item) = stream.recv().await {
            match item {
                Ok(Message::Text(t)) => {
                    let mut line = Vec::with_capacity(t.len() + 1);
                    line.extend_from_slice(t.as_bytes());
                    line.push(b'\n');
                    if stdout.write_all(&line).await.is_err() || stdout.flush().await.is_err() {
                        break;
                    }
                }
                Ok(Message::Binary(b)) => {
                    let line = format!("{}\n", String::from_utf8_lossy(&b));
                    let _ = stdout.write_all(line.as_bytes()).await;
                    let _ = stdout.flush().await;
                }
                Err(_) => break,
            }
        }
    };

    tokio::select! {
        _ = receive => {}
        _ = send_stdin => {}
    }

    let Some(t) = stream.termination() else {
        eprintln!("error: the connection ended unexpectedly");
        return 1;
    };
    let code = t.code().as_u16();
    if t.reason().is_empty() {
        eprintln!("closed: {code}");
    } else {
        eprintln!("closed: {code} {}", t.reason());
    }
    // One rule for a normal end, the core's: 1000, 1001, or an empty
    // Close (1005), after a completed closing handshake.
    if t.is_normal() {
        0
    } else {
        1
    }
}
