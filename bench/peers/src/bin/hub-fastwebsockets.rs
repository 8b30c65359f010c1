//! A hub on fastwebsockets written the idiomatic way for that crate: the
//! upgrade through hyper, and since `read_frame` is not cancel safe (it
//! cannot sit in a `select!`), each connection is split into a read task
//! that handles requests and a write task that `select!`s between the
//! replies the reader hands it and `recv()` from the channel's
//! `tokio::sync::broadcast` (the message serialized once, a `Bytes` clone
//! per subscriber), writing each with `write_frame` (framed per
//! subscriber; one write per message). Protocol subset: see
//! `wsline_bench_peers::hub`. For bench/fanout.sh.

use std::sync::Arc;

use fastwebsockets::{upgrade, Frame, OpCode, Payload, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc;
use wsline_bench_peers::hub::{self, Hub};

/// What the read task hands the write task.
enum Out {
    /// A reply to write.
    Text(String),
    /// A subscription to start forwarding.
    Subscribe(broadcast::Receiver<Bytes>),
    /// A Pong or the Close reply the library asks to send.
    Frame(OpCode, Vec<u8>),
}

async fn handle_client(
    hub: Arc<Hub<Bytes>>,
    fut: upgrade::UpgradeFut,
) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (mut read, mut write) = ws.split(tokio::io::split);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let (client, welcome) = hub.welcome();
    let _ = tx.send(Out::Text(welcome));
    let writer = tokio::spawn(async move {
        let mut subscription: Option<broadcast::Receiver<Bytes>> = None;
        loop {
            tokio::select! {
                biased;
                out = rx.recv() => match out {
                    Some(Out::Text(text)) => {
                        write.write_frame(Frame::text(Payload::Owned(text.into_bytes()))).await?;
                    }
                    Some(Out::Subscribe(s)) => subscription = Some(s),
                    Some(Out::Frame(opcode, data)) => {
                        write.write_frame(Frame::new(true, opcode, None, Payload::Owned(data))).await?;
                    }
                    None => break,
                },
                message = next(&mut subscription) => match message {
                    Ok(bytes) => write.write_frame(Frame::text(Payload::Borrowed(&bytes))).await?,
                    Err(RecvError::Lagged(n)) => hub::lagged(n),
                    Err(RecvError::Closed) => subscription = None,
                },
            }
        }
        Ok::<(), WebSocketError>(())
    });
    let mut obligated = |frame: Frame<'_>| {
        let sent = tx.send(Out::Frame(frame.opcode, frame.payload.to_vec()));
        async move { sent.map_err(|_| "the write task is gone") }
    };
    loop {
        let frame = read.read_frame(&mut obligated).await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text => {
                let Ok(text) = std::str::from_utf8(&frame.payload) else {
                    break;
                };
                let response = hub.handle(&client, text, false);
                if let Some(s) = response.subscribed {
                    let _ = tx.send(Out::Subscribe(s));
                }
                let _ = tx.send(Out::Text(response.reply));
            }
            _ => {}
        }
    }
    drop(tx);
    let _ = writer.await;
    Ok(())
}

/// The next message of the subscription; never, without one.
async fn next<T: Clone>(sub: &mut Option<broadcast::Receiver<T>>) -> Result<T, RecvError> {
    match sub {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn main() {
    let hub: Arc<Hub<Bytes>> = Hub::new();
    wsline_bench_peers::serve(move |tcp| {
        let hub = hub.clone();
        async move {
            let io = hyper_util::rt::TokioIo::new(tcp);
            let service = service_fn(move |mut req: Request<Incoming>| {
                let hub = hub.clone();
                async move {
                    let (response, fut) = upgrade::upgrade(&mut req)?;
                    tokio::spawn(async move {
                        let _ = tokio::task::unconstrained(handle_client(hub, fut)).await;
                    });
                    Ok::<Response<Empty<Bytes>>, WebSocketError>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        }
    });
}
