//! What the peer servers share (the hubs also share [`hub`]): the command line (one optional
//! listen address, default 127.0.0.1:9001; port 0 picks a free one), a
//! current-thread tokio runtime, the accept loop with TCP_NODELAY (as
//! `wsline echo` sets), and the "listening on ws://ADDR" line on stdout
//! that bench/compare.sh waits for. With `PEER_DEFER_ACCEPT` set in the
//! environment the listener defers accepts (Linux TCP_DEFER_ACCEPT, as
//! `wsline echo --defer-accept`), for a comparison where every server
//! does.

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Runs `handle` for every accepted connection, each in its own task on a
/// current-thread runtime. Never returns unless the listener cannot bind.
pub fn serve<F, Fut>(handle: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let listener = match TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        };
        if std::env::var_os("PEER_DEFER_ACCEPT").is_some() {
            defer_accept(&listener);
        }
        let local = listener.local_addr().expect("local address");
        println!("listening on ws://{local}");
        let _ = std::io::stdout().flush();
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(handle(tcp));
                }
                // Out of descriptors and the like: keep serving.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
}

/// Sets TCP_DEFER_ACCEPT (1 s, Linux) on a listening socket: connections
/// are handed over with their first bytes, as `wsline echo --defer-accept`
/// does. Panics if the system refuses (a benchmark must not silently run
/// another configuration).
pub fn defer_accept(listener: &impl std::os::fd::AsRawFd) {
    let one: libc::c_int = 1;
    // SAFETY: a live descriptor, and a c_int option value with its size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "TCP_DEFER_ACCEPT: {}",
        std::io::Error::last_os_error()
    );
}

pub mod hub;
