//! `deflate_negotiation`: a `Sec-WebSocket-Extensions` offer as the server
//! sees it, negotiated under several server settings.
//!
//! The input (UTF-8, else ignored) is one header value: `parse_extensions`,
//! then `negotiate_server` with the server defaults, a permissive server
//! (15-bit windows) and a strict one (9-bit windows, no context takeover).
//! Invariants, for each setting where the server accepts:
//! - the server picked the first permessage-deflate offer whose parameters
//!   are valid, and its answer always parses (`parse_extensions`) as exactly
//!   one `permessage-deflate` with windows in 8..=15;
//! - the answer never grants more than the offer asked for: no window above
//!   the one requested, no-context-takeover kept when requested;
//! - `negotiate_client`, holding the configuration that would have made this
//!   offer, accepts the server's answer and derives the very same
//!   parameters as the server;
//! - the client's own offer for that configuration (`client_offer`) is
//!   accepted by the server with the same answer's parameters;
//! - a client and a server using the parameters exchange compressed
//!   messages intact, both ways, several in a row (context takeover).

use std::time::Instant;

use wsline_proto::deflate::{client_offer, negotiate_client, negotiate_server, EXTENSION_NAME};
use wsline_proto::handshake::{parse_extensions, ExtensionOffer};
use wsline_proto::{Config, Connection, DeflateConfig, DeflateParams, Event, Message, Role};

use crate::wire::{decode_output, drain};

/// Whether the server would accept this one offer (its name and parameters
/// are valid permessage-deflate).
pub fn server_would_pick(offer: &ExtensionOffer) -> bool {
    negotiate_server(
        std::slice::from_ref(offer),
        &DeflateConfig::server_default(),
    )
    .is_some()
}

/// The client configuration whose offer asks for what `offer` asks for.
pub fn client_config_for(offer: &ExtensionOffer) -> DeflateConfig {
    let bits = |name: &str| match offer.param(name) {
        Some(Some(v)) => v.parse().expect("a valid offer's window bits"),
        _ => 15,
    };
    let mut c = DeflateConfig::client_default();
    c.server_no_context_takeover = offer.param("server_no_context_takeover").is_some();
    c.client_no_context_takeover = offer.param("client_no_context_takeover").is_some();
    c.server_max_window_bits = bits("server_max_window_bits");
    c.client_max_window_bits = bits("client_max_window_bits");
    c
}

/// The server settings the target negotiates under.
pub fn server_configs() -> [DeflateConfig; 3] {
    let default = DeflateConfig::server_default();
    let mut permissive = DeflateConfig::server_default();
    permissive.server_max_window_bits = 15;
    permissive.client_max_window_bits = 15;
    permissive.min_message_size = 0;
    let mut strict = DeflateConfig::server_default();
    strict.server_max_window_bits = 9;
    strict.client_max_window_bits = 9;
    strict.server_no_context_takeover = true;
    strict.client_no_context_takeover = true;
    strict.mem_level = 1;
    strict.level = 1;
    [default, permissive, strict]
}

/// The `deflate_negotiation` target.
pub fn run(data: &[u8]) {
    let Ok(header) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(offers) = parse_extensions([header]) else {
        return;
    };
    let picked = offers.iter().find(|o| server_would_pick(o));
    for (i, server) in server_configs().iter().enumerate() {
        let Some((params, answer)) = negotiate_server(&offers, server) else {
            assert!(picked.is_none(), "a valid offer refused: {offers:?}");
            continue;
        };
        let offer = picked.expect("accepted without a valid offer");
        assert!(offer.name.eq_ignore_ascii_case(EXTENSION_NAME));
        let parsed = parse_extensions([answer.as_str()])
            .unwrap_or_else(|e| panic!("the server's answer {answer:?} does not parse: {e}"));
        assert_eq!(parsed.len(), 1, "{answer}");
        assert_eq!(parsed[0].name, EXTENSION_NAME);
        for bits in [params.server_max_window_bits, params.client_max_window_bits] {
            assert!((8..=15).contains(&bits), "window bits {bits} in {params:?}");
        }
        let asked = client_config_for(offer);
        assert!(params.server_max_window_bits <= asked.server_max_window_bits);
        assert!(params.server_no_context_takeover >= asked.server_no_context_takeover);
        assert!(params.client_no_context_takeover >= asked.client_no_context_takeover);
        if offer.param("client_max_window_bits").is_some() {
            assert!(params.client_max_window_bits <= asked.client_max_window_bits);
        } else {
            // The client did not say it can be limited.
            assert_eq!(params.client_max_window_bits, 15, "{answer}");
        }

        let client_params = negotiate_client(&parsed, &asked)
            .unwrap_or_else(|e| panic!("client refuses {answer:?} to {offer:?}: {e}"))
            .expect("compression on");
        assert_eq!(client_params, params, "the two ends disagree on {answer:?}");

        // What the client itself offers for that configuration.
        let own = client_offer(&asked);
        let own_offers = parse_extensions([own.as_str()]).expect("client_offer parses");
        let (own_params, own_answer) =
            negotiate_server(&own_offers, server).expect("the server takes client_offer");
        let own_parsed = parse_extensions([own_answer.as_str()]).expect("answer parses");
        let own_client = negotiate_client(&own_parsed, &asked)
            .unwrap_or_else(|e| panic!("client refuses {own_answer:?} to {own:?}: {e}"))
            .expect("compression on");
        assert_eq!(own_client, own_params);

        if i == 0 || data.len() % 3 == i {
            round_trip(&params, server, &asked, data);
        }
    }
}

/// A client and a server with `params` exchange a few messages both ways;
/// each arrives intact, and the server compresses (RSV1) exactly the
/// messages of at least `min_message_size` bytes.
pub fn round_trip(
    params: &DeflateParams,
    server_config: &DeflateConfig,
    client_config: &DeflateConfig,
    sample: &[u8],
) {
    let sample = &sample[..sample.len().min(512)];
    let now = Instant::now();
    let mut config = Config::default();
    config.ping_interval = None;
    config.max_message_size = 1 << 20;
    let mut server = Connection::new(Role::Server, config.clone(), now);
    let mut client = Connection::new(Role::Client, config, now);
    server.enable_deflate(params, server_config);
    client.enable_deflate(params, client_config);

    let text: String = String::from_utf8_lossy(sample).repeat(3);
    let messages = [
        Message::text("hello, hello, hello, permessage-deflate, hello again"),
        Message::binary(sample.to_vec()),
        Message::text(text),
        Message::text("hello, hello, hello, permessage-deflate, hello again"),
        Message::binary(sample.repeat(40)),
        Message::text(""),
    ];
    for m in &messages {
        server.send(m).expect("server sends");
        client.send(m).expect("client sends");
    }
    let to_client = server.take_output();
    let to_server = client.take_output();
    let frames = decode_output(Role::Server, &to_client);
    assert_eq!(frames.len(), messages.len());
    for (f, m) in frames.iter().zip(&messages) {
        let compressed = f.rsv & 0b100 != 0;
        assert_eq!(
            compressed,
            m.len() >= server_config.min_message_size,
            "RSV1 on a {}-byte message",
            m.len()
        );
    }
    client.receive_data(&to_client, now);
    server.receive_data(&to_server, now);
    for (who, conn) in [("client", &mut client), ("server", &mut server)] {
        let mut events = Vec::new();
        drain(conn, &mut events);
        let got: Vec<Message> = events
            .into_iter()
            .map(|e| match e {
                Event::Message(m) => m,
                other => panic!("{who} got {other:?} with {params:?}"),
            })
            .collect();
        assert_eq!(got.len(), messages.len(), "{who} with {params:?}");
        for (g, m) in got.iter().zip(&messages) {
            assert!(g == m, "{who}: message changed with {params:?}");
        }
    }
}
