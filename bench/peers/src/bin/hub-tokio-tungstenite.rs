//! A hub on tokio-tungstenite written the idiomatic way: one
//! `tokio::sync::broadcast` per channel carrying the message serialized
//! once (`Utf8Bytes`, cloned per subscriber), and per connection one task
//! that `select!`s between reading its socket and `recv()` from its
//! subscription, sending each message with `SinkExt::send` (tungstenite
//! frames it; one write per message). Protocol subset: see
//! `wsline_bench_peers::hub`. For bench/fanout.sh.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use wsline_bench_peers::hub::{self, Hub};

fn main() {
    let hub: Arc<Hub<Utf8Bytes>> = Hub::new();
    wsline_bench_peers::serve(move |tcp| connection(hub.clone(), tcp));
}

async fn connection(hub: Arc<Hub<Utf8Bytes>>, tcp: TcpStream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let (client, welcome) = hub.welcome();
    if ws.send(Message::text(welcome)).await.is_err() {
        return;
    }
    let mut subscription: Option<broadcast::Receiver<Utf8Bytes>> = None;
    loop {
        tokio::select! {
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let response = hub.handle(&client, &text, subscription.is_some());
                    if let Some(rx) = response.subscribed {
                        subscription = Some(rx);
                    }
                    if ws.send(Message::text(response.reply)).await.is_err() {
                        return;
                    }
                }
                // Pings are answered and Close replied to by tungstenite.
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            },
            message = next(&mut subscription) => match message {
                Ok(text) => {
                    if ws.send(Message::Text(text)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => hub::lagged(n),
                Err(RecvError::Closed) => subscription = None,
            },
        }
    }
}

/// The next message of the subscription; never, without one.
async fn next<T: Clone>(sub: &mut Option<broadcast::Receiver<T>>) -> Result<T, RecvError> {
    match sub {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
