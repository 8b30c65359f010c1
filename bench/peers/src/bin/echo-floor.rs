//! echo-floor: not a WebSocket library, a yardstick. The least work a
//! server can do and still echo what `wsline bench` sends, so that
//! bench/compare.sh can show how much of a server's CPU per message is the
//! kernel's, which no WebSocket implementation controls.
//!
//! One thread, one epoll loop (mio), one 64 KiB receive buffer, no task,
//! no allocation per message, no copy in user space: frames are unmasked
//! in place in the receive buffer and written back with one `writev` per
//! read (a new header beside each payload), data frames cut through as
//! they arrive (no reassembly). The system calls per message are those of
//! `wsline echo` (one read, one write, epoll as it comes; TCP_NODELAY set
//! once on the listener); handshakes too (accept, epoll_ctl, read, write
//! the 101, read the Close, write the Close, close).
//!
//! What it leaves out is everything that makes a server correct: no UTF-8
//! check, no limits, no fragmentation rules, no timeouts, barely any
//! request validation. Never expose it.
//!
//! Usage: `echo-floor [ADDR] [--defer-accept]` (ADDR 127.0.0.1:9001 by
//! default, port 0 picks one); `--defer-accept` sets TCP_DEFER_ACCEPT on
//! the listener and reads each request as its connection is accepted, as
//! `wsline echo --defer-accept` does.

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::SocketAddr;

use base64::Engine as _;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// Room before the received bytes, so that a frame header cut by the end
/// of the previous read can be put back in front of the rest.
const HEADROOM: usize = 16;
const READ: usize = 64 * 1024;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Default)]
struct Conn {
    open: bool,
    /// Bytes of a request head, or of a frame header or control frame,
    /// that the previous read cut.
    carry: Vec<u8>,
    /// Payload bytes still to come of the data frame being cut through.
    remaining: u64,
    mask: [u8; 4],
    /// Position in the mask of the next payload byte.
    phase: usize,
    /// Output the socket did not take.
    pending: Vec<u8>,
    /// A Close was answered: close once `pending` is written.
    closing: bool,
    /// Scratch for the pieces of one read's output (kept to be reused).
    pieces: Vec<Piece>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let defer = args.iter().any(|a| a == "--defer-accept");
    let addr: SocketAddr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("127.0.0.1:9001", String::as_str)
        .parse()
        .expect("listen address");
    let std_listener = std::net::TcpListener::bind(addr).expect("bind");
    std_listener.set_nonblocking(true).expect("nonblocking");
    // Accepted sockets inherit TCP_NODELAY on Linux (as in wsline echo).
    socket2::SockRef::from(&std_listener)
        .set_tcp_nodelay(true)
        .expect("nodelay");
    if defer {
        wsline_bench_peers::defer_accept(&std_listener);
    }
    let mut listener = TcpListener::from_std(std_listener);
    println!("listening on ws://{}", listener.local_addr().expect("addr"));
    let _ = io::stdout().flush();

    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register");
    let mut events = Events::with_capacity(1024);
    let mut conns: HashMap<usize, (TcpStream, Conn)> = HashMap::new();
    let mut next = 0usize;
    let mut buf = vec![0u8; HEADROOM + READ];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            next += 1;
                            let token = Token(next);
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_ok()
                            {
                                let mut conn = Conn::default();
                                // With TCP_DEFER_ACCEPT the request is there.
                                if defer && !turn(&mut stream, &mut conn, &mut buf, true) {
                                    continue;
                                }
                                conns.insert(next, (stream, conn));
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = event.token().0;
            let Some((stream, conn)) = conns.get_mut(&key) else {
                continue;
            };
            let keep = turn(stream, conn, &mut buf, event.is_writable());
            if !keep {
                conns.remove(&key);
            }
        }
    }
}

/// One readiness event for a connection; false when it is over.
fn turn(stream: &mut TcpStream, conn: &mut Conn, buf: &mut [u8], writable: bool) -> bool {
    if writable && !conn.pending.is_empty() {
        match flush_pending(stream, conn) {
            Ok(true) if conn.closing => return false,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    loop {
        let n = match stream.read(&mut buf[HEADROOM..]) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let ok = if conn.open {
            frames(stream, conn, buf, n)
        } else {
            handshake(stream, conn, buf, n)
        };
        if !ok || (conn.closing && conn.pending.is_empty()) {
            return false;
        }
        if n < READ {
            // A short read drained the socket (edge-triggered).
            return true;
        }
    }
}

fn flush_pending(stream: &mut TcpStream, conn: &mut Conn) -> io::Result<bool> {
    while !conn.pending.is_empty() {
        match stream.write(&conn.pending) {
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The request head: answer 101 with the accept key, then frames.
fn handshake(stream: &mut TcpStream, conn: &mut Conn, buf: &mut [u8], n: usize) -> bool {
    conn.carry.extend_from_slice(&buf[HEADROOM..HEADROOM + n]);
    let Some(end) = conn.carry.windows(4).position(|w| w == b"\r\n\r\n") else {
        return conn.carry.len() < 8192;
    };
    let head = &conn.carry[..end];
    let Some(key) = head.split(|&b| b == b'\n').find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon]
            .eq_ignore_ascii_case(b"sec-websocket-key")
            .then(|| line[colon + 1..].trim_ascii())
    }) else {
        return false;
    };
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(GUID.as_bytes());
    let mut accept = [0u8; 28];
    let len = base64::engine::general_purpose::STANDARD
        .encode_slice(sha.digest().bytes(), &mut accept)
        .unwrap_or(0);
    let mut response = [0u8; 160];
    let mut w = &mut response[..];
    let _ = w.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    let _ = w.write_all(&accept[..len]);
    let _ = w.write_all(b"\r\n\r\n");
    let left = w.len();
    let total = response.len() - left;
    conn.pending.extend_from_slice(&response[..total]);
    let rest = conn.carry.split_off(end + 4);
    conn.carry.clear();
    conn.open = true;
    if flush_pending(stream, conn).is_err() {
        return false;
    }
    if rest.is_empty() {
        return true;
    }
    let n = rest.len().min(READ);
    buf[HEADROOM..HEADROOM + n].copy_from_slice(&rest[..n]);
    frames(stream, conn, buf, n)
}

/// Unmasks `data` in place, the mask starting at `phase`.
fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    let m = [
        mask[phase & 3],
        mask[(phase + 1) & 3],
        mask[(phase + 2) & 3],
        mask[(phase + 3) & 3],
    ];
    let word = u32::from_ne_bytes(m);
    let (chunks, tail) = data.as_chunks_mut::<4>();
    for c in chunks {
        *c = (u32::from_ne_bytes(*c) ^ word).to_ne_bytes();
    }
    for (i, b) in tail.iter_mut().enumerate() {
        *b ^= m[i];
    }
}

/// Where one piece of output lives until the `writev`.
enum Piece {
    /// A new header, in `heads`.
    Head(usize, usize),
    /// Bytes of the receive buffer (payload, unmasked in place).
    Data(usize, usize),
}

/// The frames of one read: unmasked in place, written back with new
/// headers in one `writev`.
fn frames(stream: &mut TcpStream, conn: &mut Conn, buf: &mut [u8], n: usize) -> bool {
    // A header cut by the previous read goes back in front of the rest.
    let mut at = HEADROOM;
    if !conn.carry.is_empty() {
        if conn.carry.len() <= HEADROOM {
            at = HEADROOM - conn.carry.len();
            buf[at..HEADROOM].copy_from_slice(&conn.carry);
        } else {
            // A control frame cut in pieces: rare, slow path.
            let mut joined = std::mem::take(&mut conn.carry);
            joined.extend_from_slice(&buf[HEADROOM..HEADROOM + n]);
            let mut big = vec![0u8; HEADROOM + joined.len()];
            big[HEADROOM..].copy_from_slice(&joined);
            return frames_in(stream, conn, &mut big, HEADROOM, HEADROOM + joined.len());
        }
        conn.carry.clear();
    }
    frames_in(stream, conn, buf, at, HEADROOM + n)
}

fn frames_in(
    stream: &mut TcpStream,
    conn: &mut Conn,
    buf: &mut [u8],
    mut at: usize,
    end: usize,
) -> bool {
    let mut heads = [0u8; 1024];
    let mut head_len = 0;
    let mut pieces = std::mem::take(&mut conn.pieces);
    pieces.clear();
    let mut close_after = false;
    while at < end {
        if conn.remaining > 0 {
            let take = (conn.remaining.min((end - at) as u64)) as usize;
            unmask(&mut buf[at..at + take], conn.mask, conn.phase);
            conn.phase = (conn.phase + take) & 3;
            conn.remaining -= take as u64;
            pieces.push(Piece::Data(at, take));
            at += take;
            continue;
        }
        let avail = end - at;
        if avail < 2 {
            break;
        }
        let b0 = buf[at];
        let b1 = buf[at + 1];
        let (len, hlen) = match b1 & 0x7f {
            126 if avail >= 4 => (u64::from(u16::from_be_bytes([buf[at + 2], buf[at + 3]])), 4),
            127 if avail >= 10 => (
                u64::from_be_bytes(buf[at + 2..at + 10].try_into().unwrap()),
                10,
            ),
            126 | 127 => break,
            l => (u64::from(l), 2),
        };
        if b1 & 0x80 == 0 || avail < hlen + 4 {
            if b1 & 0x80 == 0 {
                return false; // an unmasked client frame
            }
            break;
        }
        let mask: [u8; 4] = buf[at + hlen..at + hlen + 4].try_into().unwrap();
        let opcode = b0 & 0x0f;
        if opcode >= 8 {
            // Control frame: only whole.
            let total = hlen + 4 + len as usize;
            if avail < total {
                break;
            }
            let payload = at + hlen + 4;
            unmask(&mut buf[payload..payload + len as usize], mask, 0);
            match opcode {
                8 => {
                    // Close: the same code back, then the TCP close.
                    let code_len = (len as usize).min(2);
                    heads_push(
                        &mut heads,
                        &mut head_len,
                        &mut pieces,
                        &[0x88, code_len as u8],
                    );
                    pieces.push(Piece::Data(payload, code_len));
                    close_after = true;
                    at += total;
                    break;
                }
                9 => {
                    heads_push(&mut heads, &mut head_len, &mut pieces, &[0x8a, len as u8]);
                    pieces.push(Piece::Data(payload, len as usize));
                }
                _ => {}
            }
            at += total;
            continue;
        }
        // Data frame: its new header now, the payload as it comes.
        let mut h = [0u8; 10];
        h[0] = b0;
        let hl = if len < 126 {
            h[1] = len as u8;
            2
        } else if len < 65536 {
            h[1] = 126;
            h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            4
        } else {
            h[1] = 127;
            h[2..10].copy_from_slice(&len.to_be_bytes());
            10
        };
        if head_len + hl > heads.len() {
            // Out of header room: write what we have and go on.
            if !write_pieces(stream, conn, buf, &heads, &pieces) {
                return false;
            }
            pieces.clear();
            head_len = 0;
        }
        heads_push(&mut heads, &mut head_len, &mut pieces, &h[..hl]);
        conn.remaining = len;
        conn.mask = mask;
        conn.phase = 0;
        at += hlen + 4;
    }
    if at < end {
        conn.carry.extend_from_slice(&buf[at..end]);
    }
    let ok = write_pieces(stream, conn, buf, &heads, &pieces);
    conn.pieces = pieces;
    if !ok {
        return false;
    }
    if close_after {
        conn.closing = true;
        conn.carry.clear();
    }
    true
}

fn heads_push(heads: &mut [u8], head_len: &mut usize, pieces: &mut Vec<Piece>, h: &[u8]) {
    heads[*head_len..*head_len + h.len()].copy_from_slice(h);
    pieces.push(Piece::Head(*head_len, h.len()));
    *head_len += h.len();
}

/// The pieces in `writev`s of up to 64 slices; what the socket does not
/// take waits in `pending`.
fn write_pieces(
    stream: &mut TcpStream,
    conn: &mut Conn,
    buf: &[u8],
    heads: &[u8],
    pieces: &[Piece],
) -> bool {
    let slice = |p: &Piece| match *p {
        Piece::Head(s, l) => &heads[s..s + l],
        Piece::Data(s, l) => &buf[s..s + l],
    };
    let mut rest = pieces;
    while !rest.is_empty() {
        if !conn.pending.is_empty() {
            for p in rest {
                conn.pending.extend_from_slice(slice(p));
            }
            return true;
        }
        let batch = &rest[..rest.len().min(64)];
        rest = &rest[batch.len()..];
        let mut iov = [IoSlice::new(&[]); 64];
        let mut total = 0;
        for (slot, p) in iov.iter_mut().zip(batch) {
            *slot = IoSlice::new(slice(p));
            total += slot.len();
        }
        let written = loop {
            match stream.write_vectored(&iov[..batch.len()]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break 0,
                Err(_) => return false,
            }
        };
        if written < total {
            // The socket is full: keep the rest of this batch.
            let mut skip = written;
            for p in batch {
                let s = slice(p);
                if skip >= s.len() {
                    skip -= s.len();
                } else {
                    conn.pending.extend_from_slice(&s[skip..]);
                    skip = 0;
                }
            }
        }
    }
    true
}
