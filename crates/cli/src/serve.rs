//! `wsline serve`: the real-time hub (see the `wsline-hub` crate).
//!
//! Owns `--config` (reading the TOML file), `--print-config` and running
//! the hub. The settings themselves, their flags, environment variables,
//! keys, defaults and the merge (flags over the environment over the file
//! over the defaults) are the hub's table (`wsline_hub::config`).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use wsline_hub::config::{FileConfig, Flags};
use wsline_hub::HubConfig;

/// Options of `wsline serve`: `--config` and a flag per setting of the
/// hub's table (`wsline_hub::config`), which also gives their help lines
/// and defaults.
#[derive(Args, Debug, Default)]
pub(crate) struct ServeArgs {
    /// TOML file with these settings (key: the flag's name with _) and [channels."pattern"] tables.
    #[arg(long, value_name = "FILE", env = "WSLINE_CONFIG")]
    config: Option<PathBuf>,
    /// Print the effective configuration (flags > environment > file > defaults) as TOML, secrets masked, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    #[command(flatten)]
    settings: Flags,
}

/// Merges flags (and the environment, which clap reads for each flag) over
/// the file over the defaults.
pub(crate) fn resolve(args: &ServeArgs) -> Result<HubConfig, String> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            FileConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    HubConfig::merge(&args.settings, file)
}

pub(crate) async fn run(config: HubConfig) -> i32 {
    let listen = config.listen;
    // The engine first: a data_dir or Redis setting that cannot work stops
    // the hub before it says it is listening.
    let hub = match wsline_hub::prepare(config) {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return 1;
        }
    };
    let shutdown = drain_signal();
    on_hangup(hub.tls());
    let scheme = if hub.is_tls() { "https" } else { "http" };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {scheme}://{addr}"),
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    }
    let _ = std::io::stdout().flush();
    match hub.serve(listener, shutdown).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The first SIGTERM or SIGINT starts a drain (the hub's `serve` sees its
/// shutdown future complete); a second one while it runs exits at once
/// with status 1, for the operator who will not wait.
fn drain_signal() -> impl std::future::Future<Output = ()> {
    let first = crate::echo::shutdown_signal();
    async move {
        first.await;
        let second = crate::echo::shutdown_signal();
        tokio::spawn(async move {
            second.await;
            eprintln!(
                "error: a second signal while draining: exiting without waiting for the clients"
            );
            std::process::exit(1);
        });
    }
}

/// SIGHUP (`systemctl reload`) must not end the hub, as it would by
/// default: with TLS it rereads the certificate and key (new handshakes
/// use them; open connections keep theirs; files that cannot be used are
/// logged and the certificate in use stays); without, it is logged and
/// otherwise ignored (the other settings are read at start).
fn on_hangup(tls: Option<wsline_hub::tls::TlsReloader>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        match &tls {
                            None => tracing::info!(
                                "SIGHUP: nothing to reload (settings are read at start)"
                            ),
                            Some(tls) => match tls.reload() {
                                Ok(()) => tracing::info!(
                                    "SIGHUP: TLS certificate and key reloaded; new connections use them"
                                ),
                                Err(e) => tracing::error!(
                                    "SIGHUP: {e}; the certificate in use stays"
                                ),
                            },
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot handle SIGHUP: {e}"),
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}
