//! The echo server of the crate documentation, on the library's tokio path
//! only: `wsline::accept` with `ServerConfig::default()`, a task per
//! connection, `recv` and `send`. Nothing of `wsline echo` (no gate, no
//! reactor, no options): scripts/test.sh runs Autobahn's server suite
//! against it (`autobahn-server-tokio`).
//!
//! ```text
//! cargo run --release -p wsline --example echo_server -- [ADDR]   # default 127.0.0.1:9001
//! ```
//!
//! Prints `listening on ws://IP:PORT` once bound (port 0 picks a free
//! one) and exits with status 0 on SIGTERM or SIGINT.

use std::io::Write;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let listener = TcpListener::bind(&listen).await?;
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
        tokio::spawn(async move {
            let mut ws = wsline::accept(tcp, &Default::default()).await?;
            while let Some(msg) = ws.recv().await {
                ws.send(msg?).await?;
            }
            Ok::<_, wsline::Error>(())
        });
    }
}
