//! `wsline autobahn-client`: the client testee for the Autobahn TestSuite.
//!
//! Follows the suite's client protocol: read the case count, run each case
//! by echoing every message, then ask for the reports. Reads the server URL
//! from `AUTOBAHN_URL` (or `--url`).

use clap::Args;
use wsline::{ClientConfig, CloseCode, Message};

/// Options of `wsline autobahn-client`.
#[derive(Args, Debug)]
pub(crate) struct AutobahnArgs {
    /// The fuzzing server's URL (default: $AUTOBAHN_URL).
    #[arg(long)]
    url: Option<String>,
    /// The agent name reported to the suite.
    #[arg(long, default_value = "wsline")]
    agent: String,
}

pub(crate) async fn run(args: AutobahnArgs) -> i32 {
    let Some(base) = args.url.or_else(|| std::env::var("AUTOBAHN_URL").ok()) else {
        eprintln!("error: set AUTOBAHN_URL or pass --url");
        return 2;
    };
    let base = base.trim_end_matches('/').to_owned();
    let mut config = ClientConfig::default();
    config.protocol.ping_interval = None;
    config.protocol.max_message_size = 64 << 20;
    config.protocol.max_frame_size = 64 << 20;

    let count = match case_count(&base, &config).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: cannot read the case count from {base}: {e}");
            return 1;
        }
    };
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={}", args.agent);
        match wsline::connect_with(&url, &config).await {
            Ok((mut ws, _)) => {
                while let Some(msg) = ws.recv().await {
                    match msg {
                        Ok(m) => {
                            let _ = ws.feed(m).await;
                        }
                        Err(_) => break,
                    }
                }
            }
            Err(e) => eprintln!("case {case}: {e}"),
        }
    }
    let url = format!("{base}/updateReports?agent={}", args.agent);
    match wsline::connect_with(&url, &config).await {
        Ok((mut ws, _)) => {
            let _ = ws.close(CloseCode::NORMAL, "").await;
            0
        }
        Err(e) => {
            eprintln!("error: updateReports: {e}");
            1
        }
    }
}

async fn case_count(base: &str, config: &ClientConfig) -> Result<u32, wsline::Error> {
    let (mut ws, _) = wsline::connect_with(&format!("{base}/getCaseCount"), config).await?;
    let mut count = 0;
    while let Some(msg) = ws.recv().await {
        if let Message::Text(t) = msg? {
            count = t.trim().parse().unwrap_or(0);
        }
    }
    Ok(count)
}
