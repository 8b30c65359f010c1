//! The closing handshake (RFC 6455 §5.5.1, §7), close codes, abnormal ends
//! and timers (keepalive, close timeout), driven by a virtual clock.

mod support;

use std::time::Instant;
use support::*;
use wsline_proto::{
    CloseCode, CloseFrame, Config, Connection, Event, Message, Role, State, TerminationKind,
};

fn pair(config: Config) -> (Connection, Connection, Instant) {
    let now = Instant::now();
    (
        Connection::new(Role::Client, config.clone(), now),
        Connection::new(Role::Server, config, now),
        now,
    )
}

fn no_keepalive() -> Config {
    let mut c = Config::default();
    c.ping_interval = None;
    c
}

fn closed(evs: &[Event]) -> &wsline_proto::Termination {
    match evs.last() {
        Some(Event::Closed(t)) => t,
        other => panic!("expected Closed last, got {other:?}"),
    }
}

#[test]
fn server_initiated_close_is_clean_on_both_sides() {
    let (mut c, mut s, now) = pair(no_keepalive());
    s.close(CloseCode::GOING_AWAY, "restart", now).unwrap();
    assert_eq!(s.state(), State::Closing);
    let (ce, se) = drive(&mut c, &mut s, now);
    // The server finishes as soon as the reply arrives and closes TCP first.
    let st = closed(&se);
    assert_eq!(st.kind, TerminationKind::Clean);
    assert!(s.wants_transport_close());
    // The client replied and now waits for the server's TCP close.
    assert!(ce.is_empty(), "{ce:?}");
    assert!(!c.wants_transport_close());
    c.receive_eof(now);
    let ce = events(&mut c);
    let ct = closed(&ce);
    assert_eq!(ct.kind, TerminationKind::Clean);
    assert_eq!((ct.code(), ct.reason()), (CloseCode::GOING_AWAY, "restart"));
    assert!(ct.is_normal());
    assert_eq!(st.code(), CloseCode::GOING_AWAY, "client echoed the code");
}

#[test]
fn client_initiated_close_is_clean_on_both_sides() {
    let (mut c, mut s, now) = pair(no_keepalive());
    c.close(CloseCode::NORMAL, "done", now).unwrap();
    let (ce, se) = drive(&mut c, &mut s, now);
    let st = closed(&se);
    assert_eq!((st.code(), st.reason()), (CloseCode::NORMAL, "done"));
    assert!(s.wants_transport_close());
    assert!(ce.is_empty());
    c.receive_eof(now);
    let ct = closed(&events(&mut c)).clone();
    assert_eq!(ct.kind, TerminationKind::Clean);
    assert_eq!(ct.code(), CloseCode::NORMAL, "server echoed 1000");
}

#[test]
fn messages_before_peer_close_are_delivered_and_answered_first() {
    let (mut s, now) = conn(Role::Server);
    let mut bytes = frame_to(Role::Server, true, 0, 1, b"one");
    bytes.extend(frame_to(Role::Server, true, 0, 1, b"two"));
    bytes.extend(frame_to(Role::Server, true, 0, 8, &close_payload(1000, "")));
    s.receive_data(&bytes, now);
    // An echo application answers each message as it takes it.
    while let Some(ev) = s.poll_event() {
        if let Event::Message(m) = ev {
            s.send(&m).unwrap();
        }
    }
    let sent = sent_frames(&mut s);
    assert_eq!(
        sent,
        vec![
            (1, true, b"one".to_vec()),
            (1, true, b"two".to_vec()),
            (8, true, 1000u16.to_be_bytes().to_vec()),
        ]
    );
    assert!(s.wants_transport_close());
}

#[test]
fn queued_messages_are_flushed_before_close() {
    let (mut c, now) = conn(Role::Client);
    c.send_text("a").unwrap();
    c.send_text("b").unwrap();
    c.close(CloseCode::NORMAL, "", now).unwrap();
    let ops: Vec<u8> = sent_frames(&mut c).iter().map(|f| f.0).collect();
    assert_eq!(ops, vec![1, 1, 8]);
}

#[test]
fn valid_close_codes_are_echoed() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        for role in [Role::Client, Role::Server] {
            let (mut c, now) = conn(role);
            c.receive_data(&frame_to(role, true, 0, 8, &close_payload(code, "r")), now);
            let evs = events(&mut c);
            let sent = sent_frames(&mut c);
            assert_eq!(
                sent,
                vec![(8, true, code.to_be_bytes().to_vec())],
                "code {code}"
            );
            if role == Role::Server {
                assert_eq!(closed(&evs).code().as_u16(), code);
            }
        }
    }
}

#[test]
fn invalid_close_codes_fail_with_1002() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        for role in [Role::Client, Role::Server] {
            let (mut c, now) = conn(role);
            c.receive_data(&frame_to(role, true, 0, 8, &close_payload(code, "")), now);
            assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
        }
    }
}

#[test]
fn one_byte_close_payload_fails_with_1002() {
    for role in [Role::Client, Role::Server] {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 8, &[3]), now);
        assert_failing(&mut c, CloseCode::PROTOCOL_ERROR);
    }
}

#[test]
fn invalid_utf8_close_reason_fails_with_1007() {
    for role in [Role::Client, Role::Server] {
        let (mut c, now) = conn(role);
        let mut p = 1000u16.to_be_bytes().to_vec();
        p.extend_from_slice(&[0xce, 0xba, 0xff]);
        c.receive_data(&frame_to(role, true, 0, 8, &p), now);
        assert_failing(&mut c, CloseCode::INVALID_PAYLOAD);
    }
}

#[test]
fn empty_close_gets_empty_reply_and_reports_1005() {
    let (mut s, now) = conn(Role::Server);
    s.receive_data(&frame_to(Role::Server, true, 0, 8, b""), now);
    let evs = events(&mut s);
    assert_eq!(sent_frames(&mut s), vec![(8, true, vec![])]);
    assert_eq!(closed(&evs).code(), CloseCode::NO_STATUS);
}

/// One definition of a normal end, for every API: a completed closing
/// handshake whose Close said 1000, 1001 or nothing (1005).
#[test]
fn a_normal_end_is_a_clean_close_with_1000_1001_or_no_code() {
    for role in [Role::Client, Role::Server] {
        for (payload, normal) in [
            (vec![], true),
            (1000u16.to_be_bytes().to_vec(), true),
            (1001u16.to_be_bytes().to_vec(), true),
            (1002u16.to_be_bytes().to_vec(), false),
            (1011u16.to_be_bytes().to_vec(), false),
            (3000u16.to_be_bytes().to_vec(), false),
            (4000u16.to_be_bytes().to_vec(), false),
        ] {
            let (mut c, now) = conn(role);
            c.receive_data(&frame_to(role, true, 0, 8, &payload), now);
            if role == Role::Client {
                // A client waits for the server to close TCP.
                c.receive_eof(now);
            }
            let evs = events(&mut c);
            let t = closed(&evs);
            assert_eq!(t.kind, TerminationKind::Clean, "{role:?} {payload:?}");
            assert_eq!(t.is_normal(), normal, "{role:?} {payload:?}: {t:?}");
        }
    }
    // Not clean: never normal, whatever was sent.
    let (mut s, now) = conn(Role::Server);
    s.close(CloseCode::NORMAL, "", now).unwrap();
    s.receive_eof(now);
    assert!(!closed(&events(&mut s)).is_normal());
}

#[test]
fn eof_without_close_is_abnormal_1006() {
    for role in [Role::Client, Role::Server] {
        let (mut c, now) = conn(role);
        c.receive_data(&frame_to(role, true, 0, 1, b"last"), now);
        c.receive_eof(now);
        let evs = events(&mut c);
        assert_eq!(evs[0], Event::Message(Message::text("last")), "data first");
        let t = closed(&evs);
        assert_eq!(t.kind, TerminationKind::Abnormal);
        assert_eq!(t.code(), CloseCode::ABNORMAL);
        assert!(!t.is_normal());
    }
}

#[test]
fn eof_after_sending_close_is_abnormal() {
    let (mut s, now) = conn(Role::Server);
    s.close(CloseCode::NORMAL, "", now).unwrap();
    s.receive_eof(now);
    assert_eq!(closed(&events(&mut s)).kind, TerminationKind::Abnormal);
}

#[test]
fn peer_close_then_eof_is_still_clean() {
    let (mut c, now) = conn(Role::Client);
    c.receive_data(
        &frame_to(Role::Client, true, 0, 8, &close_payload(1000, "")),
        now,
    );
    c.receive_eof(now);
    let t = closed(&events(&mut c)).clone();
    assert_eq!(t.kind, TerminationKind::Clean);
    assert_eq!(t.received, Some(CloseFrame::new(CloseCode::NORMAL, "")));
}

#[test]
fn close_timeout_drops_a_peer_that_never_answers() {
    let (mut s, now) = conn(Role::Server);
    s.close(CloseCode::NORMAL, "", now).unwrap();
    let deadline = s.poll_timeout().expect("close timer armed");
    assert_eq!(deadline, now + secs(10));
    s.handle_timeout(deadline - secs(1));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(deadline);
    let t = closed(&events(&mut s)).clone();
    assert_eq!(t.kind, TerminationKind::CloseTimeout);
    assert_eq!(t.code(), CloseCode::ABNORMAL);
    assert!(s.wants_transport_close());
}

#[test]
fn client_closes_tcp_itself_when_server_does_not() {
    let (mut c, now) = conn(Role::Client);
    c.close(CloseCode::NORMAL, "", now).unwrap();
    let later = now + secs(1);
    c.receive_data(
        &frame_to(Role::Client, true, 0, 8, &close_payload(1000, "")),
        later,
    );
    assert!(
        events(&mut c).is_empty(),
        "waits for the server's TCP close"
    );
    assert_eq!(c.poll_timeout(), Some(later + secs(10)));
    c.handle_timeout(later + secs(10));
    let t = closed(&events(&mut c)).clone();
    assert_eq!(t.kind, TerminationKind::Clean, "handshake completed");
    assert!(c.wants_transport_close());
}

#[test]
fn keepalive_pings_and_pongs_keep_the_connection() {
    let mut config = Config::default();
    config.ping_interval = Some(secs(20));
    config.ping_timeout = Some(secs(5));
    let (mut c, mut s, now) = pair(config);
    assert_eq!(s.poll_timeout(), Some(now + secs(20)));
    let mut t = now;
    for _ in 0..5 {
        t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        // The ping goes out; the client answers automatically.
        drive(&mut c, &mut s, t);
        assert_eq!(s.state(), State::Open);
        // The next Ping is an interval after this one was sent.
        assert_eq!(s.poll_timeout(), Some(t + secs(20)));
    }
    assert!(t >= now + secs(100));
}

#[test]
fn keepalive_timeout_sends_1011_and_drops() {
    for role in [Role::Client, Role::Server] {
        let now = Instant::now();
        let mut config = Config::default();
        config.ping_interval = Some(secs(20));
        config.ping_timeout = Some(secs(20));
        let mut c = Connection::new(role, config, now);
        c.handle_timeout(now + secs(20));
        let sent = sent_frames(&mut c);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, 9, "ping sent");
        assert_eq!(c.poll_timeout(), Some(now + secs(40)));
        // An unsolicited pong with another payload does not count.
        c.receive_data(&frame_to(role, true, 0, 0xA, b"other"), now + secs(30));
        c.handle_timeout(now + secs(40));
        let sent = sent_frames(&mut c);
        assert_eq!(sent[0].0, 8);
        assert_eq!(&sent[0].2[..2], &1011u16.to_be_bytes());
        let evs = events(&mut c);
        let t = closed(&evs);
        assert_eq!(t.kind, TerminationKind::KeepaliveTimeout);
        assert_eq!(t.code(), CloseCode::INTERNAL_ERROR);
        assert!(c.wants_transport_close(), "dropped right after the close");
    }
}

#[test]
fn interval_zero_means_no_keepalive() {
    let (c, _) = conn(Role::Server);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn application_fail_sends_code_and_ends() {
    let (mut s, now) = conn(Role::Server);
    s.fail(CloseCode::POLICY_VIOLATION, "go away", now);
    let sent = sent_frames(&mut s);
    assert_eq!(sent[0].2, close_payload(1008, "go away"));
    let t = closed(&events(&mut s)).clone();
    assert_eq!(t.kind, TerminationKind::Failed);
    assert_eq!(t.code(), CloseCode::POLICY_VIOLATION);
}

#[test]
fn data_after_peer_close_is_ignored() {
    let (mut s, now) = conn(Role::Server);
    let mut bytes = frame_to(Role::Server, true, 0, 8, &close_payload(1000, ""));
    bytes.extend(frame_to(Role::Server, true, 0, 1, b"late"));
    s.receive_data(&bytes, now);
    let evs = events(&mut s);
    assert_eq!(evs.len(), 1, "{evs:?}");
}
