//! Negotiation rules of RFC 7692 §7.1 and the codec's round trips.

use super::*;
use crate::handshake::parse_extensions;

fn offers(header: &str) -> Vec<ExtensionOffer> {
    parse_extensions([header]).unwrap()
}

fn server(header: &str) -> Option<(DeflateParams, String)> {
    let mut config = DeflateConfig::server_default();
    config.server_max_window_bits = 15;
    config.client_max_window_bits = 15;
    negotiate_server(&offers(header), &config)
}

#[test]
fn plain_offer_is_accepted_with_plain_answer() {
    let (p, answer) = server("permessage-deflate").unwrap();
    assert_eq!(answer, "permessage-deflate");
    assert_eq!(p.server_max_window_bits, 15);
    assert_eq!(p.client_max_window_bits, 15);
}

#[test]
fn browser_offer_with_valueless_client_bits() {
    let (p, answer) = server("permessage-deflate; client_max_window_bits").unwrap();
    assert_eq!(answer, "permessage-deflate");
    assert_eq!(p.client_max_window_bits, 15);
    // With server defaults the server limits both windows to 12.
    let (p, answer) = negotiate_server(
        &offers("permessage-deflate; client_max_window_bits"),
        &DeflateConfig::server_default(),
    )
    .unwrap();
    assert_eq!(
        answer,
        "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    );
    assert_eq!(
        (p.server_max_window_bits, p.client_max_window_bits),
        (12, 12)
    );
}

#[test]
fn client_bits_not_offered_cannot_be_limited() {
    let (p, answer) = negotiate_server(
        &offers("permessage-deflate"),
        &DeflateConfig::server_default(),
    )
    .unwrap();
    assert!(!answer.contains("client_max_window_bits"), "{answer}");
    assert_eq!(p.client_max_window_bits, 15);
}

#[test]
fn all_four_parameters() {
    let (p, answer) = server(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11",
    )
    .unwrap();
    assert!(p.server_no_context_takeover && p.client_no_context_takeover);
    assert_eq!(
        (p.server_max_window_bits, p.client_max_window_bits),
        (10, 11)
    );
    assert_eq!(
        answer,
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=11"
    );
}

#[test]
fn invalid_offers_are_skipped_for_the_next_valid_one() {
    for bad in [
        "permessage-deflate; foo=1",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=abc",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11",
    ] {
        assert!(server(bad).is_none(), "{bad} must be refused");
        let both = format!("{bad}, permessage-deflate; server_max_window_bits=9");
        let (p, _) = server(&both).unwrap_or_else(|| panic!("fallback after {bad}"));
        assert_eq!(p.server_max_window_bits, 9);
    }
}

#[test]
fn offers_across_several_headers() {
    let offers = parse_extensions([
        "x-unknown; a=1",
        "permessage-deflate; foo",
        "permessage-deflate; server_max_window_bits=10",
    ])
    .unwrap();
    let (p, _) = negotiate_server(&offers, &DeflateConfig::server_default()).unwrap();
    assert_eq!(p.server_max_window_bits, 10);
}

#[test]
fn unknown_extensions_only_means_no_compression() {
    assert!(server("x-webkit-deflate-frame").is_none());
}

fn client(answer: &str) -> Result<Option<DeflateParams>, String> {
    negotiate_client(&offers(answer), &DeflateConfig::client_default())
}

#[test]
fn client_offer_is_what_browsers_send() {
    assert_eq!(
        client_offer(&DeflateConfig::client_default()),
        "permessage-deflate; client_max_window_bits"
    );
}

#[test]
fn client_accepts_valid_answers() {
    let p = client("permessage-deflate").unwrap().unwrap();
    assert_eq!(
        (p.server_max_window_bits, p.client_max_window_bits),
        (15, 15)
    );
    let p = client("permessage-deflate; server_no_context_takeover; client_max_window_bits=9; server_max_window_bits=8")
        .unwrap()
        .unwrap();
    assert!(p.server_no_context_takeover);
    assert_eq!((p.server_max_window_bits, p.client_max_window_bits), (8, 9));
    assert_eq!(
        negotiate_client(&[], &DeflateConfig::client_default()),
        Ok(None)
    );
}

#[test]
fn client_rejects_contradicting_answers() {
    for bad in [
        "permessage-deflate; foo",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate, permessage-deflate",
    ] {
        assert!(client(bad).is_err(), "{bad} must be rejected");
    }
    // Asked for a server window of 10: a larger one, or none, contradicts.
    let mut config = DeflateConfig::client_default();
    config.server_max_window_bits = 10;
    config.client_max_window_bits = 10;
    config.server_no_context_takeover = true;
    let offer = client_offer(&config);
    assert_eq!(
        offer,
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=10"
    );
    for bad in [
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12",
    ] {
        assert!(negotiate_client(&offers(bad), &config).is_err(), "{bad}");
    }
    assert!(negotiate_client(
        &offers("permessage-deflate; server_no_context_takeover; server_max_window_bits=9"),
        &config
    )
    .is_ok());
}

fn codec_pair(params: DeflateParams) -> (PerMessageDeflate, PerMessageDeflate) {
    let mut config = DeflateConfig::client_default();
    config.min_message_size = 0;
    (
        PerMessageDeflate::new(crate::Role::Client, &params, &config),
        PerMessageDeflate::new(crate::Role::Server, &params, &config),
    )
}

#[test]
fn codec_round_trips_with_and_without_context_takeover() {
    for no_ctx in [false, true] {
        for bits in [8u8, 9, 12, 15] {
            let params = DeflateParams {
                server_max_window_bits: bits,
                client_max_window_bits: bits,
                server_no_context_takeover: no_ctx,
                client_no_context_takeover: no_ctx,
            };
            let (mut c, mut s) = codec_pair(params);
            for msg in [
                "",
                "hello hello hello hello",
                &"abc".repeat(10_000),
                "hello hello",
            ] {
                let mut wire = Vec::new();
                c.compress(msg.as_bytes(), &mut wire);
                assert!(!wire.ends_with(&TAIL_FOR_TEST), "tail stripped");
                let mut out = Vec::new();
                s.decompress(&wire, &mut out, 1 << 20).unwrap();
                s.finish_message(&mut out, 1 << 20).unwrap();
                assert_eq!(out, msg.as_bytes(), "bits {bits} no_ctx {no_ctx}");
            }
        }
    }
}

const TAIL_FOR_TEST: [u8; 4] = [0, 0, 0xff, 0xff];

#[test]
fn inflating_stops_at_the_limit() {
    let params = DeflateParams {
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        server_no_context_takeover: false,
        client_no_context_takeover: false,
    };
    let (mut c, mut s) = codec_pair(params);
    let mut wire = Vec::new();
    c.compress(&vec![0u8; 10 << 20], &mut wire);
    assert!(wire.len() < 20_000);
    let mut out = Vec::new();
    assert_eq!(
        s.decompress(&wire, &mut out, 100_000),
        Err(InflateError::TooBig)
    );
    assert!(out.len() <= 100_001);
    assert!(out.capacity() < 300_000, "capacity {}", out.capacity());
}

#[test]
fn garbage_is_invalid() {
    let params = DeflateParams {
        server_max_window_bits: 15,
        client_max_window_bits: 15,
        server_no_context_takeover: false,
        client_no_context_takeover: false,
    };
    let (_, mut s) = codec_pair(params);
    let mut out = Vec::new();
    let r = s
        .decompress(&[0xff; 64], &mut out, 1 << 20)
        .and_then(|()| s.finish_message(&mut out, 1 << 20));
    assert!(matches!(r, Err(InflateError::Invalid(_))), "{r:?}");
}
