//! `echo-tokio-tungstenite-tls ADDR CERT.pem KEY.pem`: the tokio-tungstenite
//! echo server (the same loop as `echo-tokio-tungstenite`) over TLS
//! through tokio-rustls with rustls' ring provider, the crypto `wsline echo
//! --tls-cert` uses; prints "listening on wss://ADDR".

fn main() {
    wsline_bench_peers::serve_tls(wsline_bench_peers::tungstenite_echo::echo_connection);
}
