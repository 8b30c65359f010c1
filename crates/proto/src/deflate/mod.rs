//! permessage-deflate (RFC 7692): settings, negotiation, and the codec.
//!
//! Owns which offers a server accepts and what it answers, what a client
//! offers and which answers it accepts, and (in `codec`) compressing and
//! inflating message payloads within the connection's size limit. The
//! connection decides which messages go through the codec (RSV1).

mod codec;

pub(crate) use codec::{InflateError, PerMessageDeflate};

use crate::handshake::{format_extension, ExtensionOffer};

/// The extension's registered name.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// Settings for permessage-deflate on one end.
///
/// Memory: compressor and inflater are allocated on the first compressed
/// message, not at connect, and kept for the connection's life unless the
/// negotiated `*_no_context_takeover` frees them after every message. With
/// zlib-rs a kept compressor costs a fixed 128 KiB hash table plus about
/// `2^(window_bits+2)` bytes, an inflater about `2^window_bits` + ~7 KiB:
/// measured, one server connection holds ~209 KiB after a message each way
/// at the defaults (window 12 bits, memory level 5), ~419 KiB at zlib's
/// (15, 8), and under 1 KiB with no context takeover (docs/compression.md).
///
/// ```
/// let mut deflate = wsline_proto::DeflateConfig::server_default();
/// deflate.server_no_context_takeover = true; // no memory kept between messages' contexts
/// deflate.min_message_size = 128;           // small messages go uncompressed
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// Server side: the largest window the server compresses with.
    /// Client side: asks the server for at most this window (offered when < 15).
    pub server_max_window_bits: u8,
    /// Server side: limits the client's window when the client allows it.
    /// Client side: the largest window the client compresses with.
    pub client_max_window_bits: u8,
    /// The server resets its compression context after every message
    /// (a client sets this to ask the server for it).
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after every message
    /// (a server sets this to require it, saving its own inflater memory
    /// between messages' contexts).
    pub client_no_context_takeover: bool,
    /// zlib compression level, 1 (fastest) to 9 (smallest).
    pub level: u8,
    /// zlib memory level, 1 (least memory) to 9.
    pub mem_level: u8,
    /// Messages shorter than this are sent uncompressed.
    pub min_message_size: usize,
}

impl DeflateConfig {
    /// Server defaults: bounded memory per connection (window 12, memory
    /// level 5), level 6, messages under 32 bytes uncompressed.
    pub fn server_default() -> Self {
        Self {
            server_max_window_bits: 12,
            client_max_window_bits: 12,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            level: 6,
            mem_level: 5,
            min_message_size: 32,
        }
    }

    /// Client defaults: offer what browsers offer (`client_max_window_bits`
    /// without a value) and accept what the server chooses.
    pub fn client_default() -> Self {
        Self {
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            level: 6,
            mem_level: 8,
            min_message_size: 32,
        }
    }
}

/// What both ends agreed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The window the server compresses with (the client inflates with).
    pub server_max_window_bits: u8,
    /// The window the client compresses with (the server inflates with).
    pub client_max_window_bits: u8,
    /// The server resets its context after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its context after every message.
    pub client_no_context_takeover: bool,
}

/// One permessage-deflate offer or answer, parsed and checked.
#[derive(Default, Debug)]
struct Parsed {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

fn parse_bits(name: &str, value: Option<&str>) -> Result<u8, String> {
    let v = value.ok_or_else(|| format!("{name} needs a value"))?;
    if v.is_empty() || v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) || v.starts_with('0') {
        return Err(format!("{name}={v} is not a number from 8 to 15"));
    }
    match v.parse::<u8>() {
        Ok(n @ 8..=15) => Ok(n),
        _ => Err(format!("{name}={v} is not a number from 8 to 15")),
    }
}

fn parse(offer: &ExtensionOffer) -> Result<Parsed, String> {
    let mut p = Parsed::default();
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in &offer.params {
        let key = name.to_ascii_lowercase();
        if seen.iter().any(|s| s.eq_ignore_ascii_case(&key)) {
            return Err(format!("duplicate parameter {name}"));
        }
        seen.push(name);
        match key.as_str() {
            "server_no_context_takeover" | "client_no_context_takeover" => {
                if value.is_some() {
                    return Err(format!("{name} takes no value"));
                }
                if key.starts_with("server") {
                    p.server_no_context_takeover = true;
                } else {
                    p.client_no_context_takeover = true;
                }
            }
            "server_max_window_bits" => {
                p.server_max_window_bits = Some(parse_bits(name, value.as_deref())?);
            }
            "client_max_window_bits" => {
                p.client_max_window_bits = Some(match value {
                    None => None,
                    Some(v) => Some(parse_bits(name, Some(v))?),
                });
            }
            _ => return Err(format!("unknown parameter {name}")),
        }
    }
    Ok(p)
}

/// Server side: picks the first permessage-deflate offer it can honour
/// (invalid offers are skipped) and returns the agreed parameters with the
/// `Sec-WebSocket-Extensions` value to answer. `None`: no compression,
/// the connection is still accepted.
pub fn negotiate_server(
    offers: &[ExtensionOffer],
    config: &DeflateConfig,
) -> Option<(DeflateParams, String)> {
    offers
        .iter()
        .filter(|o| o.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|o| parse(o).ok())
        .map(|p| answer(&p, config))
}

fn answer(p: &Parsed, config: &DeflateConfig) -> (DeflateParams, String) {
    let mut response = ExtensionOffer::new(EXTENSION_NAME);
    let server_no_context_takeover =
        p.server_no_context_takeover || config.server_no_context_takeover;
    let client_no_context_takeover =
        p.client_no_context_takeover || config.client_no_context_takeover;
    if server_no_context_takeover {
        response = response.with_param("server_no_context_takeover", None);
    }
    if client_no_context_takeover {
        response = response.with_param("client_no_context_takeover", None);
    }
    let server_bits = p
        .server_max_window_bits
        .unwrap_or(15)
        .min(config.server_max_window_bits.clamp(8, 15));
    if server_bits < 15 || p.server_max_window_bits.is_some() {
        response = response.with_param("server_max_window_bits", Some(&server_bits.to_string()));
    }
    let client_bits = match p.client_max_window_bits {
        // Not offered: the client may use any window; we cannot limit it.
        None => 15,
        Some(offered) => {
            let bits = offered
                .unwrap_or(15)
                .min(config.client_max_window_bits.clamp(8, 15));
            if bits < 15 || offered.is_some() {
                response = response.with_param("client_max_window_bits", Some(&bits.to_string()));
            }
            bits
        }
    };
    (
        DeflateParams {
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            server_no_context_takeover,
            client_no_context_takeover,
        },
        format_extension(&response),
    )
}

/// Client side: the `Sec-WebSocket-Extensions` value to offer.
pub fn client_offer(config: &DeflateConfig) -> String {
    let mut offer = ExtensionOffer::new(EXTENSION_NAME);
    if config.server_no_context_takeover {
        offer = offer.with_param("server_no_context_takeover", None);
    }
    if config.client_no_context_takeover {
        offer = offer.with_param("client_no_context_takeover", None);
    }
    if config.server_max_window_bits < 15 {
        offer = offer.with_param(
            "server_max_window_bits",
            Some(&config.server_max_window_bits.clamp(8, 15).to_string()),
        );
    }
    if config.client_max_window_bits < 15 {
        offer = offer.with_param(
            "client_max_window_bits",
            Some(&config.client_max_window_bits.clamp(8, 15).to_string()),
        );
    } else {
        offer = offer.with_param("client_max_window_bits", None);
    }
    format_extension(&offer)
}

/// Client side: checks the server's answer against what
/// [`client_offer`] offered. `Ok(None)`: the server declined compression.
pub fn negotiate_client(
    accepted: &[ExtensionOffer],
    config: &DeflateConfig,
) -> Result<Option<DeflateParams>, String> {
    let mut deflate = accepted
        .iter()
        .filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME));
    let Some(answer) = deflate.next() else {
        if let Some(other) = accepted.first() {
            return Err(format!(
                "the server accepted extension {:?}, which was not offered",
                other.name
            ));
        }
        return Ok(None);
    };
    if accepted.len() > 1 {
        return Err(
            "the server accepted more than one extension; only permessage-deflate was offered"
                .into(),
        );
    }
    let p = parse(answer).map_err(|e| format!("invalid permessage-deflate answer: {e}"))?;
    if config.server_no_context_takeover && !p.server_no_context_takeover {
        return Err("the server ignored server_no_context_takeover, which was requested".into());
    }
    let offered_server_bits = config.server_max_window_bits.clamp(8, 15);
    let server_bits = match p.server_max_window_bits {
        Some(n) if offered_server_bits < 15 && n > offered_server_bits => {
            return Err(format!(
                "server_max_window_bits={n} is larger than the {offered_server_bits} requested"
            ))
        }
        Some(n) => n,
        None if offered_server_bits < 15 => {
            return Err("the server ignored server_max_window_bits, which was requested".into())
        }
        None => 15,
    };
    let offered_client_bits = config.client_max_window_bits.clamp(8, 15);
    let client_bits = match p.client_max_window_bits {
        None => offered_client_bits,
        Some(None) => {
            return Err("client_max_window_bits in the answer needs a value".into());
        }
        Some(Some(n)) if n > offered_client_bits => {
            return Err(format!(
                "client_max_window_bits={n} is larger than the {offered_client_bits} offered"
            ))
        }
        Some(Some(n)) => n,
    };
    Ok(Some(DeflateParams {
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
        server_no_context_takeover: p.server_no_context_takeover,
        client_no_context_takeover: p.client_no_context_takeover
            || config.client_no_context_takeover,
    }))
}

#[cfg(test)]
mod tests;
