//! Property tests: messages survive any chunking, and arbitrary bytes never
//! panic the parser nor make it buffer beyond its limits.

mod support;

use proptest::prelude::*;
use std::time::Instant;
use support::*;
use wsline_proto::{Config, Connection, Event, Message, Role};

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,200}".prop_map(Message::text),
        proptest::collection::vec(any::<u8>(), 0..70_000).prop_map(Message::binary),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn messages_round_trip_in_any_chunking(
        msgs in proptest::collection::vec(message(), 1..6),
        chunk in 1usize..5000,
        client_sends: bool,
    ) {
        let now = Instant::now();
        let (from, to) = if client_sends { (Role::Client, Role::Server) } else { (Role::Server, Role::Client) };
        let mut a = Connection::new(from, Config::default(), now);
        let mut b = Connection::new(to, Config::default(), now);
        for m in &msgs {
            a.send(m).unwrap();
        }
        let wire = a.take_output();
        for piece in wire.chunks(chunk) {
            b.receive_data(piece, now);
        }
        let got: Vec<Message> = events(&mut b)
            .into_iter()
            .map(|e| match e { Event::Message(m) => m, other => panic!("{other:?}") })
            .collect();
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overbuffer(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        chunk in 1usize..300,
        server: bool,
    ) {
        let now = Instant::now();
        let mut config = Config::default();
        config.max_frame_size = 256;
        config.max_message_size = 512;
        let role = if server { Role::Server } else { Role::Client };
        let mut c = Connection::new(role, config, now);
        for piece in data.chunks(chunk) {
            c.receive_data(piece, now);
            // One partial frame (header + payload <= 256) plus one chunk,
            // plus a fragmented message below 512 bytes.
            prop_assert!(c.buffered_input() <= 14 + 256 + chunk + 512);
            while let Some(ev) = c.poll_event() {
                if let Event::Message(m) = ev {
                    prop_assert!(m.len() <= 512);
                }
            }
        }
        c.receive_eof(now);
        let evs = events(&mut c);
        prop_assert!(matches!(evs.last(), Some(Event::Closed(_))) || c.wants_transport_close());
        if let Some(Event::Closed(t)) = evs.last() {
            // A failed connection always carries a close code it sent.
            if t.kind == wsline_proto::TerminationKind::Failed {
                prop_assert!(t.sent.is_some());
            }
        }
    }
}

fn frames_strategy(server: bool) -> impl Strategy<Value = Vec<u8>> {
    let role = if server { Role::Server } else { Role::Client };
    proptest::collection::vec(
        (
            prop_oneof![
                Just(0u8),
                Just(1),
                Just(2),
                Just(8),
                Just(9),
                Just(10),
                Just(3)
            ],
            any::<bool>(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                ".{0,100}".prop_map(|s| s.into_bytes()),
                Just(1000u16.to_be_bytes().to_vec()),
            ],
        ),
        0..12,
    )
    .prop_map(move |frames| {
        let mut out = Vec::new();
        for (op, fin, payload) in frames {
            out.extend(frame_to(role, fin || op >= 8, 0, op, &payload));
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The slice fast path of `receive_data` (which unmasks a buffered
    /// frame's payload as it copies it) against the buffered path of
    /// `read_buffer` + `process` (which unmasks in place), and against the
    /// two taking turns piece by piece, as the tokio layer's reads do, and
    /// against `receive_some` taking one event at a time, as the reactor
    /// does: same events, same output, any chunking.
    #[test]
    fn slice_and_buffer_paths_agree(
        (server, data) in any::<bool>().prop_flat_map(|s| (Just(s), frames_strategy(s))),
        chunk in 1usize..400,
    ) {
        let now = Instant::now();
        let role = if server { Role::Server } else { Role::Client };
        let mut fast = Connection::new(role, Config::default(), now);
        let mut simple = Connection::new(role, Config::default(), now);
        let mut mixed = Connection::new(role, Config::default(), now);
        let mut one = Connection::new(role, Config::default(), now);
        let (mut ef, mut es, mut em, mut eo) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, piece) in data.chunks(chunk).enumerate() {
            fast.receive_data(piece, now);
            simple.read_buffer().extend_from_slice(piece);
            simple.process(now);
            if i % 2 == 0 {
                mixed.receive_data(piece, now);
            } else {
                mixed.read_buffer().extend_from_slice(piece);
                mixed.process(now);
            }
            ef.extend(events(&mut fast));
            es.extend(events(&mut simple));
            em.extend(events(&mut mixed));
            let mut at = 0;
            while at < piece.len() {
                let used = one.receive_some(&piece[at..], now);
                prop_assert!(used > 0, "no progress at {} of {}", at, piece.len());
                at += used;
                eo.extend(events(&mut one));
            }
        }
        prop_assert_eq!(&eo, &es);
        prop_assert_eq!(&ef, &es);
        prop_assert_eq!(&em, &es);
        let simple_sent = sent_frames(&mut simple);
        prop_assert_eq!(&sent_frames(&mut fast), &simple_sent);
        prop_assert_eq!(&sent_frames(&mut mixed), &simple_sent);
        prop_assert_eq!(&sent_frames(&mut one), &simple_sent);
        prop_assert_eq!(one.state(), simple.state());
        prop_assert_eq!(fast.state(), simple.state());
        prop_assert_eq!(mixed.state(), simple.state());
    }
}
