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
