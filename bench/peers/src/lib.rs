//! What the peer servers share (the hubs also share [`hub`]): the command line (one optional
//! listen address, default 127.0.0.1:9001; port 0 picks a free one), a
//! current-thread tokio runtime, the accept loop with TCP_NODELAY (as
//! `wsline echo` sets), and the "listening on ws://ADDR" line on stdout
//! that bench/compare.sh waits for. With `PEER_DEFER_ACCEPT` set in the
//! environment the listener defers accepts (Linux TCP_DEFER_ACCEPT, as
//! `wsline echo --defer-accept`), for a comparison where every server
//! does. [`serve_tls`] does the same over TLS (tokio-rustls, ring), for
//! the wss workloads.

pub mod tungstenite_echo;

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// What a TLS peer's handler gets: the connection after its TLS handshake.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

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
    run_accept_loop(addr, "ws", |tcp| {
        tokio::spawn(handle(tcp));
    });
}

/// [`serve`] over TLS 1.3/1.2 (rustls with the ring provider, ALPN
/// `http/1.1`): the command line is `ADDR CERT.pem KEY.pem`; every accepted
/// connection runs its TLS handshake in its own task, then `handle`.
pub fn serve_tls<F, Fut>(handle: F)
where
    F: Fn(TlsStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, cert, key] = &args[..] else {
        eprintln!("usage: {} ADDR CERT.pem KEY.pem", args[0]);
        std::process::exit(2);
    };
    let acceptor = match tls_acceptor(cert, key) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let handle = std::sync::Arc::new(handle);
    run_accept_loop(addr.clone(), "wss", move |tcp| {
        let acceptor = acceptor.clone();
        let handle = handle.clone();
        tokio::spawn(async move {
            if let Ok(tls) = acceptor.accept(tcp).await {
                handle(tls).await;
            }
        });
    });
}

/// A TLS acceptor from a PEM certificate chain and a PEM private key.
fn tls_acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
    // ring, as `wsline echo --tls-cert` uses (rustls deprecates it in
    // 0.23.47+ for lacking post-quantum key exchange; the lock holds
    // 0.23.46, the workspace's version).
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)))
}

/// Binds `addr`, prints "listening on SCHEME://ADDR" and gives every
/// accepted connection (TCP_NODELAY set) to `spawn`.
fn run_accept_loop<F>(addr: String, scheme: &str, spawn: F)
where
    F: Fn(TcpStream),
{
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
        println!("listening on {scheme}://{local}");
        let _ = std::io::stdout().flush();
        loop {
            match listener.accept().await {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    spawn(tcp);
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
