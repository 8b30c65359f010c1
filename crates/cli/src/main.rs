//! The `wsline` command: `serve` (the real-time hub), `echo` (echo
//! server), `connect` (interactive client), `bench` (load generator), and
//! the hidden `autobahn-client` used by the conformance suite and
//! `soak-load` used by `scripts/soak.sh`.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and sets up logging and the runtime.

mod autobahn;
mod bench;
mod connect;
mod echo;
mod secs;
mod serve;
mod soak;
mod stats;

use clap::{Parser, Subcommand};

/// A WebSocket toolkit: echo server, client, and more.
#[derive(Parser, Debug)]
#[command(name = "wsline", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the real-time hub: channels, presence, recovery, HTTP API, metrics.
    Serve(Box<serve::ServeArgs>),
    /// Run an echo server: every message comes back with the same type.
    Echo(echo::EchoArgs),
    /// Connect to a ws:// or wss:// URL: stdin lines out, messages to stdout.
    Connect(connect::ConnectArgs),
    /// Autobahn TestSuite client testee (reads AUTOBAHN_URL).
    #[command(hide = true)]
    AutobahnClient(autobahn::AutobahnArgs),
    /// Load-test a WebSocket server: echo throughput and latency, handshakes, idle connections.
    Bench(bench::BenchArgs),
    /// The mixed load of scripts/soak.sh.
    #[command(hide = true)]
    SoakLoad(soak::SoakArgs),
}

fn main() {
    let cli = Cli::parse();
    let mut serve_config = None;
    let mut json_logs = false;
    let mut level = "warn";
    if let Command::Serve(args) = &cli.command {
        match serve::resolve(args) {
            Ok(config) if args.print_config => {
                print!("{}", config.to_toml_masked());
                std::process::exit(0);
            }
            Ok(config) => {
                // The key files are read again when the hub starts; a bad
                // one is a configuration error, refused before listening.
                if let Err(e) = wsline_hub::auth::Auth::from_config(&config) {
                    eprintln!("error: {e}");
                    std::process::exit(2);
                }
                json_logs = config.log_format == wsline_hub::config::LogFormat::Json;
                serve_config = Some(config);
                level = "info";
            }
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("WSLINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if json_logs {
        logs.json().init();
    } else {
        logs.init();
    }
    // `wsline serve` runs its connections on `threads` event loops: the
    // workers of tokio's multi-threaded runtime (tasks move between them,
    // and a publication wakes its subscribers on whichever loop runs
    // them). Everything else, and `serve --threads 1`, has one loop.
    let threads = serve_config.as_ref().map_or(1, |c| c.loops());
    let mut builder = if threads > 1 {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Serve(_) => match serve_config {
                Some(config) => serve::run(config).await,
                None => 2,
            },
            Command::Echo(args) => echo::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::AutobahnClient(args) => autobahn::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::SoakLoad(args) => soak::run(args).await,
        }
    });
    // Exit without waiting for the blocking stdin reader thread.
    std::process::exit(code);
}
