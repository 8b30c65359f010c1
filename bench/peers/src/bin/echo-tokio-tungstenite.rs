//! Echo server on tokio-tungstenite (the loop: `tungstenite_echo`).

fn main() {
    wsline_bench_peers::serve(wsline_bench_peers::tungstenite_echo::echo_connection);
}
