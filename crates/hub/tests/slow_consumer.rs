//! A subscriber that stops reading: closed with 4008 once its outgoing
//! queue passes `max_queue`, counted in the metrics, its queue dropped
//! rather than grown, while another subscriber of the same channel gets
//! every message.

mod common;

use std::time::Duration;

use common::{config, start, within};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// A WebSocket client driven by hand, with a tiny receive buffer, that
/// reads only when told to.
struct RawClient {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: std::net::SocketAddr) -> RawClient {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut tcp = within("connect", socket.connect(addr)).await.unwrap();
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut raw = RawClient {
            tcp,
            buf: Vec::new(),
        };
        loop {
            if let Some(end) = raw.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(raw.buf.drain(..end + 4).collect()).unwrap();
                assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                break;
            }
            assert!(raw.fill().await > 0, "EOF in the handshake");
        }
        raw
    }

    async fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 64 * 1024];
        let n = within("read", self.tcp.read(&mut chunk)).await.unwrap();
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends a masked text frame.
    async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        assert!(payload.len() < 126);
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![0x81, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next frame: opcode and payload (server frames are unmasked).
    async fn frame(&mut self) -> (u8, Vec<u8>) {
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are unmasked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut b = [0u8; 8];
                        b.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(b) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return (opcode, payload);
                }
            }
            assert!(self.fill().await > 0, "EOF while waiting for a frame");
        }
    }

    async fn json(&mut self) -> Value {
        let (opcode, payload) = self.frame().await;
        assert_eq!(opcode, 1, "a text frame");
        serde_json::from_slice(&payload).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_closed_with_4008_its_queue_bounded_while_others_get_everything() {
    const MAX_QUEUE: usize = 256 * 1024;
    const PAYLOAD: usize = 8 * 1024;
    const BATCH: u64 = 8; // 64 KiB a batch: well within a reader's queue
    const MAX_MESSAGES: u64 = 8192; // 64 MiB: never reached when the queue is bounded
    let mut c = config();
    c.max_queue = MAX_QUEUE;
    c.publish_rate = 1_000_000;
    c.server.protocol.close_timeout = Duration::from_secs(5);
    let hub = start(c).await;

    // The slow one subscribes, then reads nothing until the end.
    let mut slow = RawClient::connect(hub.addr).await;
    assert_eq!(slow.json().await["op"], "welcome");
    slow.send_text(r#"{"op":"subscribe","channel":"firehose"}"#)
        .await;
    assert_eq!(slow.json().await["op"], "subscribed");

    // The fast one reads everything, reporting each offset.
    let mut fast = hub.client().await;
    fast.subscribe("firehose").await;
    let (offsets_tx, mut offsets) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            let m = fast.recv().await;
            if m["op"] == "message" {
                let offset = m["offset"].as_u64().unwrap();
                assert_eq!(m["data"].as_str().unwrap().len(), PAYLOAD);
                if offsets_tx.send(offset).is_err() {
                    return fast;
                }
            }
        }
    });

    let mut publisher = hub.client().await;
    let data = "z".repeat(PAYLOAD);
    let mut published = 0;
    let mut seen = 0;
    while published < MAX_MESSAGES {
        for _ in 0..BATCH {
            publisher
                .send(json!({"op": "publish", "channel": "firehose", "data": data}))
                .await;
        }
        for _ in 0..BATCH {
            published += 1;
            let reply = publisher.recv().await;
            assert_eq!(reply["offset"], published, "{reply}");
        }
        // The fast subscriber gets every offset, in order, and keeps up.
        while seen < published {
            let offset = within("the fast subscriber", offsets.recv())
                .await
                .expect("the fast reader is running");
            seen += 1;
            assert_eq!(offset, seen, "lost, doubled or reordered");
        }
        if published % (BATCH * 8) == 0
            && hub
                .metrics()
                .await
                .value("wsline_slow_consumer_disconnects_total")
                >= 1.0
        {
            break;
        }
    }
    let metrics = hub.metrics().await;
    assert_eq!(
        metrics.value("wsline_slow_consumer_disconnects_total"),
        1.0,
        "the slow consumer was cut off after {published} messages ({} MiB)",
        (published * PAYLOAD as u64) >> 20
    );

    // A few more after the cut: the fast one still gets them all.
    for _ in 0..BATCH {
        publisher.publish("firehose", json!(data.clone())).await;
        published += 1;
    }
    while seen < published {
        let offset = within("the fast subscriber", offsets.recv()).await.unwrap();
        seen += 1;
        assert_eq!(offset, seen);
    }

    // Now the slow one reads: a prefix of the messages, in order, then
    // the Close with 4008. What the hub dropped never arrives.
    let mut got = 0;
    let code = loop {
        let (opcode, payload) = slow.frame().await;
        match opcode {
            1 => {
                let m: Value = serde_json::from_slice(&payload).unwrap();
                if m["op"] == "join" {
                    continue; // the fast subscriber's
                }
                got += 1;
                assert_eq!(m["offset"], got, "a gap before the close only");
            }
            8 => break u16::from_be_bytes([payload[0], payload[1]]),
            other => panic!("unexpected opcode {other}"),
        }
    };
    assert_eq!(code, 4008);
    assert!(
        got < published,
        "the slow consumer got {got} of {published}: the rest was dropped, not queued"
    );
    // Answer the Close: the hub then forgets the connection.
    let mask = [0u8; 4];
    let mut close = vec![0x88, 0x82];
    close.extend_from_slice(&mask);
    close.extend_from_slice(&4008u16.to_be_bytes());
    slow.tcp.write_all(&close).await.unwrap();
    let metrics = hub
        .metrics_until(|m| m.get("wsline_closes_total{code=\"4008\"}") == Some(1.0))
        .await;
    assert_eq!(metrics.value("wsline_connections"), 2.0);
    reader.abort();
    eprintln!("the slow consumer got {got} of {published} before its 4008");
}
