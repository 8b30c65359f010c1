//! Admission control for servers: how many connections may be open, how
//! many may be in their opening handshake, and how many of those may come
//! from one address (RFC 6455 §4.1, the CONNECTING state).
//!
//! Owns the counters and the RAII permits that release them, and the cheap
//! refusal of a connection at accept time. It does not own listening, the
//! handshake itself or any timer: the accept loop asks [`Gate::admit`] for
//! a [`Handshake`] permit before spawning anything, turns it into a
//! [`Connected`] permit with [`Handshake::open`] once the request is read,
//! and drops the permit when the connection ends.
//!
//! Memory is bounded: the per-address map only holds addresses with a
//! handshake in progress, so it never has more than
//! [`Limits::max_handshakes`] entries.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};

use wsline_proto::handshake::Response;

/// The caps a [`Gate`] enforces.
///
/// ```
/// let mut limits = wsline::Limits::default();
/// limits.max_connections = 50_000;
/// limits.max_connecting_per_ip = 8;
/// let gate = wsline::Gate::new(limits);
/// # let _ = gate;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Open WebSocket connections (default 100 000); the next handshake is
    /// answered 503 once its request is read. `usize::MAX`: no cap.
    pub max_connections: usize,
    /// Connections in their opening handshake, from accept until the
    /// request is read and the connection is admitted (default 1024).
    /// Past it a new TCP connection is refused at once, before anything is
    /// read: this is what bounds slowloris clients that trickle their
    /// request. `usize::MAX`: no cap.
    pub max_handshakes: usize,
    /// Connections in their opening handshake from one IPv4 address or one
    /// IPv6 /64 (default 64; 0: no cap). RFC 6455 §4.1 asks a client to
    /// open one connection to a host at a time; browsers do. The default
    /// leaves room for NATs and for `wsline bench` (64 at a time); behind a
    /// reverse proxy every client has the proxy's address: raise it or
    /// set 0 there.
    pub max_connecting_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_handshakes: 1024,
            max_connecting_per_ip: 64,
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// [`Limits::max_connections`] connections are open.
    #[error("too many open connections ({0}); retry later or raise the connection limit")]
    Connections(usize),
    /// [`Limits::max_handshakes`] handshakes are in progress.
    #[error("too many handshakes in progress ({0}); retry later or raise the handshake limit")]
    Handshakes(usize),
    /// [`Limits::max_connecting_per_ip`] handshakes from this address are
    /// in progress.
    #[error("too many connections in progress from {ip} ({limit}); a client should open one connection at a time (RFC 6455 §4.1)")]
    ConnectingPerIp {
        /// The address (an IPv6 address stands for its /64).
        ip: IpAddr,
        /// The cap.
        limit: usize,
    },
}

impl Refusal {
    /// The HTTP answer: 503 with `Retry-After: 1`.
    pub fn response(&self) -> Response {
        let mut response = Response::reject(503, &self.to_string());
        response.headers.push("Retry-After", "1");
        response
    }

    /// Refuses an accepted TCP connection without a task and without
    /// waiting: takes whatever part of the request already arrived (so
    /// that closing does not reset the connection before the client reads
    /// the answer), writes the 503 if the socket takes it at once, closes.
    pub fn refuse_now(&self, tcp: tokio::net::TcpStream) {
        let Ok(mut std) = tcp.into_std() else { return };
        // `into_std` leaves the socket non-blocking: nothing here waits.
        self.refuse_nonblocking(&mut std);
        let _ = std.shutdown(std::net::Shutdown::Write);
    }

    /// Reads (and drops) what the client already sent, then writes the
    /// answer once, on a non-blocking socket: nothing here waits.
    pub(crate) fn refuse_nonblocking<S: std::io::Read + std::io::Write>(&self, socket: &mut S) {
        let mut scratch = [0u8; 4096];
        for _ in 0..4 {
            match socket.read(&mut scratch) {
                Ok(n) if n == scratch.len() => continue,
                _ => break,
            }
        }
        let _ = socket.write(&self.response().to_bytes());
    }
}

/// Counts of a gate, for logs and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GateStats {
    /// Connections admitted and not yet ended.
    pub open: usize,
    /// Handshakes in progress.
    pub handshakes: usize,
    /// Addresses (IPv4, or IPv6 /64) with a handshake in progress.
    pub addresses: usize,
    /// Connections refused since the gate was made, for any reason.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    handshakes: usize,
    per_ip: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Inner {
    limits: Limits,
    counts: Mutex<Counts>,
    refused: AtomicU64,
}

impl Inner {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        // The counts stay consistent whatever panicked while holding them:
        // every update is a single step.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        self.refused.fetch_add(1, Relaxed);
        why
    }
}

/// Hands out permits for connections within [`Limits`]. Cheap to clone;
/// clones share the counts.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let gate = wsline::Gate::new(wsline::Limits::default());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:9001").await?;
/// let config = wsline::ServerConfig::default();
/// loop {
///     let (tcp, peer) = listener.accept().await?;
///     let handshake = match gate.admit(peer.ip()) {
///         Ok(permit) => permit,
///         Err(refusal) => { refusal.refuse_now(tcp); continue }
///     };
///     let config = config.clone();
///     tokio::spawn(async move {
///         let mut open = None;
///         let accepted = wsline::accept_with(tcp, &config, |_| {
///             open = Some(handshake.open().map_err(|r| r.response())?);
///             Ok(wsline::Acceptance::default())
///         });
///         let Ok(mut ws) = accepted.await else { return };
///         // `open` is held until the connection ends.
///         while let Some(Ok(msg)) = ws.recv().await {
///             if ws.send(msg).await.is_err() { break }
///         }
///     });
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Gate {
    inner: Arc<Inner>,
}

impl Gate {
    /// A gate enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                counts: Mutex::new(Counts::default()),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// The caps.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Admits a connection just accepted from `peer` into its opening
    /// handshake, or says why not (the caller then refuses it, e.g. with
    /// [`Refusal::refuse_now`]). Never waits.
    pub fn admit(&self, peer: IpAddr) -> Result<Handshake, Refusal> {
        let limits = &self.inner.limits;
        let key = address_key(peer);
        let mut counts = self.inner.counts();
        if counts.handshakes >= limits.max_handshakes {
            return Err(self
                .inner
                .refuse(Refusal::Handshakes(limits.max_handshakes)));
        }
        if limits.max_connecting_per_ip > 0 {
            let n = counts.per_ip.get(&key).copied().unwrap_or(0);
            if n >= limits.max_connecting_per_ip {
                return Err(self.inner.refuse(Refusal::ConnectingPerIp {
                    ip: key,
                    limit: limits.max_connecting_per_ip,
                }));
            }
            counts.per_ip.insert(key, n + 1);
        }
        counts.handshakes += 1;
        Ok(Handshake {
            gate: self.inner.clone(),
            key,
        })
    }

    /// The current counts.
    pub fn stats(&self) -> GateStats {
        let counts = self.inner.counts();
        GateStats {
            open: counts.open,
            handshakes: counts.handshakes,
            addresses: counts.per_ip.len(),
            refused: self.inner.refused.load(Relaxed),
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

/// IPv4 addresses count alone (an IPv4-mapped IPv6 address is its IPv4
/// address); an IPv6 address counts with its /64, which one host usually
/// owns whole.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// A connection in its opening handshake. Dropping it frees its handshake
/// slot and its address's slot.
#[derive(Debug)]
#[must_use = "the slot is freed when the permit is dropped"]
pub struct Handshake {
    gate: Arc<Inner>,
    key: IpAddr,
}

impl Handshake {
    /// The handshake is done with (the request is read and accepted):
    /// takes an open-connection slot and frees the handshake slots, or
    /// refuses with [`Refusal::Connections`] (answer it with
    /// [`Refusal::response`]).
    pub fn open(self) -> Result<Connected, Refusal> {
        let limit = self.gate.limits.max_connections;
        let mut counts = self.gate.counts();
        if counts.open >= limit {
            drop(counts);
            return Err(self.gate.refuse(Refusal::Connections(limit)));
        }
        counts.open += 1;
        drop(counts);
        Ok(Connected {
            gate: self.gate.clone(),
        })
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        counts.handshakes = counts.handshakes.saturating_sub(1);
        if self.gate.limits.max_connecting_per_ip > 0 {
            if let Some(n) = counts.per_ip.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    counts.per_ip.remove(&self.key);
                }
            }
        }
    }
}

/// An open connection. Dropping it frees its slot.
#[derive(Debug)]
#[must_use = "the slot is freed when the permit is dropped"]
pub struct Connected {
    gate: Arc<Inner>,
}

impl Drop for Connected {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        counts.open = counts.open.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(connections: usize, handshakes: usize, per_ip: usize) -> Limits {
        Limits {
            max_connections: connections,
            max_handshakes: handshakes,
            max_connecting_per_ip: per_ip,
        }
    }

    #[test]
    fn handshake_cap_refuses_then_frees_on_drop() {
        let gate = Gate::new(limits(10, 2, 0));
        let a = gate.admit(ip("10.0.0.1")).unwrap();
        let _b = gate.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(
            gate.admit(ip("10.0.0.3")).unwrap_err(),
            Refusal::Handshakes(2)
        );
        drop(a);
        let _c = gate.admit(ip("10.0.0.3")).unwrap();
        assert_eq!(gate.stats().refused, 1);
    }

    #[test]
    fn per_ip_cap_counts_one_address_and_its_v6_prefix() {
        let gate = Gate::new(limits(10, 10, 2));
        let _a = gate.admit(ip("2001:db8::1")).unwrap();
        let _b = gate.admit(ip("2001:db8::ffff:2")).unwrap();
        assert!(matches!(
            gate.admit(ip("2001:db8::3")),
            Err(Refusal::ConnectingPerIp { limit: 2, .. })
        ));
        let _other = gate.admit(ip("2001:db8:0:1::1")).unwrap();
        let _v4 = gate.admit(ip("192.0.2.1")).unwrap();
        let _mapped = gate.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(
            gate.admit(ip("192.0.2.1")).is_err(),
            "mapped = same address"
        );
    }

    #[test]
    fn open_moves_the_slot_and_the_map_empties() {
        let gate = Gate::new(limits(1, 10, 1));
        let open = gate.admit(ip("10.0.0.1")).unwrap().open().unwrap();
        let stats = gate.stats();
        assert_eq!((stats.open, stats.handshakes, stats.addresses), (1, 0, 0));
        let second = gate.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(second.open().unwrap_err(), Refusal::Connections(1));
        assert_eq!(
            gate.stats(),
            GateStats {
                open: 1,
                handshakes: 0,
                addresses: 0,
                refused: 1
            }
        );
        drop(open);
        assert_eq!(gate.stats().open, 0);
    }

    #[test]
    fn refusal_answers_503_with_retry_after() {
        let r = Refusal::Handshakes(3).response();
        assert_eq!(r.status, 503);
        assert_eq!(r.headers.get("retry-after"), Some("1"));
    }
}
