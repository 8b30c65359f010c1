//! The tokio-tungstenite echo loop, over plain TCP
//! (`echo-tokio-tungstenite`) or TLS (`echo-tokio-tungstenite-tls`).
//! Replies are queued with `feed` and flushed once no more input is ready,
//! the same coalescing `wsline echo` does, so that neither side pays a
//! write per message where the other does not.

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

/// Upgrades `stream` and echoes text and binary messages until it ends.
pub async fn echo_connection<S>(stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
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
}

async fn echo<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    msg: Message,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match msg {
        Message::Text(_) | Message::Binary(_) => ws.feed(msg).await,
        // Pings are answered and Close replied to by tungstenite itself.
        _ => Ok(()),
    }
}
