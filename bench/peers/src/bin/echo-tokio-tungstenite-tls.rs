//! `echo-tokio-tungstenite-tls ADDR CERT.pem KEY.pem`: the tokio-tungstenite
//! echo server (the same loop as `echo-tokio-tungstenite`) over TLS
//! through tokio-rustls with rustls' ring provider, the crypto `wsline echo
//! --tls-cert` uses; prints "listening on wss://ADDR".

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn main() {
    wsline_bench_peers::serve_tls(|tls| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tls).await else {
            return;
        };
        loop {
            let Some(Ok(msg)) = ws.next().await else {
                return;
            };
            if echo(&mut ws, msg).await.is_err() {
                return;
            }
            // Everything already received, without waiting.
            while let Some(next) = ws.next().now_or_never() {
                let Some(Ok(msg)) = next else {
                    return;
                };
                if echo(&mut ws, msg).await.is_err() {
                    return;
                }
            }
            if ws.flush().await.is_err() {
                return;
            }
        }
    });
}

async fn echo<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    msg: Message,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match msg {
        Message::Text(_) | Message::Binary(_) => ws.feed(msg).await,
        // Pings are answered and Close replied to by tungstenite itself.
        _ => Ok(()),
    }
}
