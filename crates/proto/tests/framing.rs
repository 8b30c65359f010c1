//! Framing rules of RFC 6455 §5, each tested from both sides where it applies.

mod support;

use support::*;
use wsline_proto::{CloseCode, Event, Message, ProtocolError, Role, TerminationKind};

const BOTH: [Role; 2] = [Role::Client, Role::Server];

#[test]
fn server_receives_unmasked_frame() {
    let (mut s, now) = conn(Role::Server);
    s.receive_data(&raw_frame(true, 0, 1, None, b"hi"), now);
    assert_failing(&mut s, CloseCode::PROTOCOL_ERROR);
}

#[test]
fn client_receives_masked_frame() {
    let (mut c, now) = conn(Role::Client);
    c.receive_data(&raw_frame(true, 0, 1, Some(KEY), b"hi"), now);
    assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
}

#[test]
fn client_masks_every_frame_with_a_fresh_key() {
    let (mut c, _) = conn(Role::Client);
    c.send_binary(&[0u8; 16]).unwrap();
    c.send_binary(&[0u8; 16]).unwrap();
    let out = c.take_output();
    let (h1, _) = wsline_proto::frame::parse_header(&out).unwrap().unwrap();
    let (h2, _) = wsline_proto::frame::parse_header(&out[22..])
        .unwrap()
        .unwrap();
    assert!(h1.mask.is_some() && h2.mask.is_some());
    assert_ne!(h1.mask, h2.mask, "keys must differ between frames");
}

#[test]
fn server_frames_are_not_masked() {
    let (mut s, _) = conn(Role::Server);
    s.send_text("x").unwrap();
    assert_eq!(s.output(), &[0x81, 0x01, b'x']);
}

#[test]
fn length_forms_are_decoded() {
    for role in BOTH {
        for len in [0usize, 125, 126, 65535, 65536, 70000] {
            let (mut c, now) = conn(role);
            let payload = vec![7u8; len];
            c.receive_data(&frame_to(role, true, 0, 2, &payload), now);
            assert_eq!(
                events(&mut c),
                vec![Event::Message(Message::binary(payload))]
            );
        }
    }
}

#[test]
fn length_with_top_bit_set_fails() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        let mut f = vec![0x82, 127 | if role == Role::Server { 0x80 } else { 0 }];
        f.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 1]);
        if role == Role::Server {
            f.extend_from_slice(&KEY);
        }
        c.receive_data(&f, now);
        assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn reserved_opcodes_fail() {
    for role in BOTH {
        for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let (mut c, now) = conn(role);
            c.receive_data(&frame_to(role, true, 0, op, b""), now);
            assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
        }
    }
}

#[test]
fn rsv_bits_without_extension_fail() {
    for role in BOTH {
        for rsv in 1u8..8 {
            let (mut c, now) = conn(role);
            c.receive_data(&frame_to(role, true, rsv, 1, b"x"), now);
            assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
        }
    }
}

#[test]
fn fragmented_control_frame_fails() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, false, 0, 9, b"p"), now);
        assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn control_frame_over_125_bytes_fails() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 9, &[0; 126]), now);
        assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        let mut bytes = frame_to(role, false, 0, 1, b"Hel");
        bytes.extend(frame_to(role, true, 0, 9, b"ping!"));
        bytes.extend(frame_to(role, false, 0, 0, b"lo "));
        bytes.extend(frame_to(role, true, 0, 0, "wörld".as_bytes()));
        c.receive_data(&bytes, now);
        assert_eq!(
            events(&mut c),
            vec![
                Event::Ping(bytes::Bytes::from_static(b"ping!")),
                Event::Message(Message::text("Hello wörld")),
            ]
        );
        let sent = sent_frames(&mut c);
        assert_eq!(sent, vec![(0xA, true, b"ping!".to_vec())], "auto pong");
    }
}

#[test]
fn continuation_without_start_fails() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 0, b"x"), now);
        assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn new_data_frame_inside_fragmented_message_fails() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        let mut bytes = frame_to(role, false, 0, 1, b"a");
        bytes.extend(frame_to(role, true, 0, 2, b"b"));
        c.receive_data(&bytes, now);
        assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn invalid_utf8_fails_with_1007() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 1, &[b'a', 0xff, b'b']), now);
        assert_failing(&mut c, CloseCode::INVALID_PAYLOAD);
    }
}

#[test]
fn invalid_utf8_fails_before_the_frame_is_complete() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        let mut payload = b"valid start ".to_vec();
        payload.extend_from_slice(&[0xce, 0xba, 0xf4, 0x90, 0x80, 0x80]); // > U+10FFFF
        payload.extend_from_slice(&[b'x'; 1000]);
        let frame = frame_to(role, true, 0, 1, &payload);
        // Only the header and the first 20 payload bytes arrive.
        let header_len = frame.len() - payload.len();
        c.receive_data(&frame[..header_len + 20], now);
        assert_failing(&mut c, CloseCode::INVALID_PAYLOAD);
    }
}

#[test]
fn invalid_utf8_across_fragments_fails_at_once() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        let mut bytes = frame_to(role, false, 0, 1, &[b'a', 0xed]);
        bytes.extend(frame_to(role, false, 0, 0, &[0xa0, 0x80])); // surrogate
        c.receive_data(&bytes, now);
        assert_failing(&mut c, CloseCode::INVALID_PAYLOAD);
    }
}

#[test]
fn truncated_utf8_at_message_end_fails() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 1, &[b'a', 0xe2, 0x82]), now);
        assert_failing(&mut c, CloseCode::INVALID_PAYLOAD);
    }
}

#[test]
fn utf8_split_across_fragments_is_fine() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        let text = "κόσμε";
        let b = text.as_bytes();
        let mut bytes = frame_to(role, false, 0, 1, &b[..1]);
        bytes.extend(frame_to(role, false, 0, 0, &b[1..6]));
        bytes.extend(frame_to(role, true, 0, 0, &b[6..]));
        // Feed byte by byte to exercise every partial state.
        for byte in bytes {
            c.receive_data(&[byte], now);
        }
        assert_eq!(events(&mut c), vec![Event::Message(Message::text(text))]);
    }
}

#[test]
fn frame_over_max_frame_size_fails_from_the_header() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        let mut f = vec![0x82, 127 | if role == Role::Server { 0x80 } else { 0 }];
        f.extend_from_slice(&(1u64 << 40).to_be_bytes());
        if role == Role::Server {
            f.extend_from_slice(&KEY);
        }
        c.receive_data(&f, now);
        assert_failing(&mut c, CloseCode::MESSAGE_TOO_BIG);
        assert_eq!(c.buffered_input(), 0, "nothing buffered");
    }
}

#[test]
fn message_over_max_message_size_fails_before_buffering() {
    for role in BOTH {
        let now = std::time::Instant::now();
        let mut config = wsline_proto::Config::default();
        config.max_message_size = 100;
        config.ping_interval = None;
        let mut c = wsline_proto::Connection::new(role, config, now);
        let mut bytes = frame_to(role, false, 0, 2, &[1; 60]);
        bytes.extend(frame_to(role, true, 0, 9, &[2; 100])); // control: not counted
                                                             // Header of a 60-byte continuation (60 + 60 > 100): only the header.
        let cont = frame_to(role, true, 0, 0, &[3; 60]);
        bytes.extend_from_slice(&cont[..cont.len() - 60]);
        c.receive_data(&bytes, now);
        let mut evs = events(&mut c);
        let sent = sent_frames(&mut c);
        let close = sent.iter().find(|f| f.0 == 8).expect("close sent");
        assert_eq!(&close.2[..2], &1009u16.to_be_bytes());
        if role == Role::Client {
            c.receive_eof(now);
            evs.extend(events(&mut c));
        }
        assert!(matches!(evs.first(), Some(Event::Ping(_))));
        match evs.last() {
            Some(Event::Closed(t)) => {
                assert_eq!(t.code(), CloseCode::MESSAGE_TOO_BIG);
                assert_eq!(t.error, Some(ProtocolError::MessageTooBig { limit: 100 }));
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn control_frames_do_not_count_towards_message_size() {
    let now = std::time::Instant::now();
    let mut config = wsline_proto::Config::default();
    config.max_message_size = 10;
    let mut c = wsline_proto::Connection::new(Role::Server, config, now);
    let mut bytes = frame_to(Role::Server, false, 0, 2, &[1; 5]);
    bytes.extend(frame_to(Role::Server, true, 0, 9, &[2; 100]));
    bytes.extend(frame_to(Role::Server, true, 0, 0, &[3; 5]));
    c.receive_data(&bytes, now);
    let evs = events(&mut c);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert!(matches!(&evs[1], Event::Message(m) if m.len() == 10));
}

#[test]
fn unsolicited_pong_is_ignored() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 0xA, b"whatever"), now);
        c.receive_data(&frame_to(role, true, 0, 1, b"still open"), now);
        let evs = events(&mut c);
        assert_eq!(evs[1], Event::Message(Message::text("still open")));
        assert!(sent_frames(&mut c).is_empty());
        assert_eq!(c.state(), wsline_proto::State::Open);
    }
}

#[test]
fn ping_gets_pong_with_same_payload() {
    for role in BOTH {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 9, &[1, 2, 3]), now);
        assert_eq!(sent_frames(&mut c), vec![(0xA, true, vec![1, 2, 3])]);
    }
}

#[test]
fn frames_split_at_every_byte_parse_the_same() {
    for role in BOTH {
        let mut bytes = frame_to(role, true, 0, 1, "héllo".as_bytes());
        bytes.extend(frame_to(role, true, 0, 2, &[9; 300]));
        for cut in 0..bytes.len() {
            let (mut c, now) = conn(role);
            c.receive_data(&bytes[..cut], now);
            c.receive_data(&bytes[cut..], now);
            let evs = events(&mut c);
            assert_eq!(evs.len(), 2, "cut {cut}");
        }
    }
}

#[test]
fn send_after_close_is_refused() {
    let (mut c, now) = conn(Role::Client);
    c.close(CloseCode::NORMAL, "bye", now).unwrap();
    assert_eq!(c.send_text("late"), Err(wsline_proto::SendError::Closing));
    assert_eq!(
        c.close(CloseCode::ABNORMAL, "", now),
        Ok(()),
        "second close is a no-op"
    );
}

#[test]
fn close_arguments_are_checked() {
    let (mut c, now) = conn(Role::Server);
    assert!(c.close(CloseCode::ABNORMAL, "", now).is_err());
    assert!(c.close(CloseCode::NORMAL, &"x".repeat(124), now).is_err());
    assert!(c.send_ping(&[0; 126]).is_err());
    assert_eq!(c.state(), wsline_proto::State::Open);
    let _ = TerminationKind::Clean;
}

#[test]
fn messages_before_a_violation_are_answered_before_the_close() {
    // Autobahn 3.2 / 4.1.3 / 5.15: an echo of the first message goes out,
    // then the failure's Close.
    let (mut s, now) = conn(Role::Server);
    let mut bytes = frame_to(Role::Server, true, 0, 1, b"Hello");
    bytes.extend(frame_to(Role::Server, true, 0, 5, b""));
    bytes.extend(frame_to(Role::Server, true, 0, 9, b""));
    s.receive_data(&bytes, now);
    while let Some(ev) = s.poll_event() {
        if let Event::Message(m) = ev {
            s.send(&m).unwrap();
        }
    }
    let ops: Vec<u8> = sent_frames(&mut s).iter().map(|f| f.0).collect();
    assert_eq!(ops, vec![1, 8], "echo, then close; no pong");
}
