//! Echo server on tokio-websockets. Replies are queued with `feed` and
//! flushed once no more input is ready, the same coalescing `wsline echo`
//! does.

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio_websockets::{Message, ServerBuilder, WebSocketStream};

fn main() {
    wsline_bench_peers::serve(|tcp| async move {
        let Ok((_request, mut ws)) = ServerBuilder::new().accept(tcp).await else {
            return;
        };
        loop {
            let Some(Ok(msg)) = ws.next().await else {
                return;
            };
            if echo(&mut ws, msg).await.is_err() {
                return;
            }
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

async fn echo<S>(ws: &mut WebSocketStream<S>, msg: Message) -> Result<(), tokio_websockets::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if msg.is_text() || msg.is_binary() {
        ws.feed(msg).await
    } else {
        // Pings are answered and Close replied to by the library itself.
        Ok(())
    }
}
