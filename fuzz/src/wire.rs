//! Building frames for the harnesses and checking the frames a
//! [`Connection`] writes.

use wsline_proto::frame::{apply_mask, encode_header, parse_header, FrameHeader, MAX_HEADER_LEN};
use wsline_proto::{CloseCode, Connection, Event, Role, MAX_CLOSE_REASON};

/// The masking key the harnesses use for client-to-server frames.
pub const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Opcodes, as on the wire.
pub const CONT: u8 = 0x0;
/// Text.
pub const TEXT: u8 = 0x1;
/// Binary.
pub const BINARY: u8 = 0x2;
/// Close.
pub const CLOSE: u8 = 0x8;
/// Ping.
pub const PING: u8 = 0x9;
/// Pong.
pub const PONG: u8 = 0xA;

/// One frame as raw bytes, masked with `mask` when given.
pub fn frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = encode_header(&h, &mut head);
    let mut out = head[..n].to_vec();
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(k) = mask {
        apply_mask(&mut out[start..], k, 0);
    }
    out
}

/// A frame as the peer of a `to` connection sends it: masked when `to` is
/// the server.
pub fn frame_to(to: Role, fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(
        fin,
        rsv,
        opcode,
        (to == Role::Server).then_some(KEY),
        payload,
    )
}

/// A Close payload.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// A frame written by a connection, unmasked.
#[derive(Debug)]
pub struct OutFrame {
    /// FIN.
    pub fin: bool,
    /// RSV bits.
    pub rsv: u8,
    /// Opcode.
    pub opcode: u8,
    /// Unmasked payload.
    pub payload: Vec<u8>,
}

/// Decodes everything a `role` connection wrote, asserting it is a
/// well-formed frame sequence: complete frames only, masked exactly when
/// the writer is a client, known opcodes, control frames unfragmented and
/// at most 125 bytes, at most one Close and nothing after it, and a Close
/// payload that is empty or a sendable code with a UTF-8 reason of at most
/// 123 bytes.
pub fn decode_output(role: Role, out: &[u8]) -> Vec<OutFrame> {
    let mut frames: Vec<OutFrame> = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let (h, n) = parse_header(&out[at..])
            .expect("own output: valid header")
            .expect("own output: complete header");
        assert_eq!(
            h.mask.is_some(),
            role == Role::Client,
            "own output: a client masks every frame, a server none"
        );
        let len = usize::try_from(h.payload_len).expect("own output: length fits");
        let start = at + n;
        let end = start.checked_add(len).expect("own output: no overflow");
        assert!(end <= out.len(), "own output: truncated frame");
        let mut payload = out[start..end].to_vec();
        if let Some(k) = h.mask {
            apply_mask(&mut payload, k, 0);
        }
        assert!(
            matches!(h.opcode, CONT | TEXT | BINARY | CLOSE | PING | PONG),
            "own output: opcode {}",
            h.opcode
        );
        if h.opcode >= 0x8 {
            assert!(h.fin, "own output: fragmented control frame");
            assert!(payload.len() <= 125, "own output: control frame too big");
            assert_eq!(h.rsv, 0, "own output: RSV on a control frame");
        }
        assert!(
            !frames.iter().any(|f| f.opcode == CLOSE),
            "own output: a frame after our Close: {h:?}"
        );
        if h.opcode == CLOSE {
            check_close_payload(&payload);
        }
        frames.push(OutFrame {
            fin: h.fin,
            rsv: h.rsv,
            opcode: h.opcode,
            payload,
        });
        at = end;
    }
    frames
}

fn check_close_payload(p: &[u8]) {
    match p.len() {
        0 => {}
        1 => panic!("own output: one-byte Close payload"),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            let code = CloseCode::new(code).expect("own output: a real close code");
            assert!(code.is_sendable(), "own output: unsendable code {code:?}");
            assert!(p.len() - 2 <= MAX_CLOSE_REASON, "own output: long reason");
            std::str::from_utf8(&p[2..]).expect("own output: UTF-8 reason");
        }
    }
}

/// Every pending event.
pub fn drain(conn: &mut Connection, into: &mut Vec<Event>) {
    while let Some(e) = conn.poll_event() {
        into.push(e);
    }
}
