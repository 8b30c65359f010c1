//! The `wsline` command: `echo` (echo server), `connect` (interactive
//! client), and the hidden `autobahn-client` used by the conformance suite.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and sets up logging and the runtime.

mod autobahn;
mod connect;
mod echo;
mod secs;

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
    /// Run an echo server: every message comes back with the same type.
    Echo(echo::EchoArgs),
    /// Connect to a ws:// or wss:// URL: stdin lines out, messages to stdout.
    Connect(connect::ConnectArgs),
    /// Autobahn TestSuite client testee (reads AUTOBAHN_URL).
    #[command(hide = true)]
    AutobahnClient(autobahn::AutobahnArgs),
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WSLINE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async {
        match cli.command {
            Command::Echo(args) => echo::run(args).await,
            Command::Connect(args) => connect::run(args).await,
            Command::AutobahnClient(args) => autobahn::run(args).await,
        }
    });
    // Exit without waiting for the blocking stdin reader thread.
    std::process::exit(code);
}
