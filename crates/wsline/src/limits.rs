//! Admission control for servers: how many connections may be open, how
//! many may be in their opening handshake, and how many of those one
//! address may hold (RFC 6455 §4.1, the CONNECTING state).
//!
//! Owns the counters and the RAII permits that release them, and the cheap
//! refusal of a connection at accept time. It does not own listening, the
//! handshake itself or any timer: the accept loop asks [`Gate::admit`] for
//! a [`Handshake`] permit before spawning anything, turns it into a
//! [`Connected`] permit with [`Handshake::open`] once the request is read,
//! and drops the permit when the connection ends.
//!
//! The per-address rules bite only on addresses that hold handshake slots
//! without using them: a burst of prompt clients from one address (a load
//! test, a NAT, a carrier's gateway, a proxy) is admitted whole, while a
//! slowloris address can neither take more than half of the handshake
//! pool nor add to the handshakes it leaves stalled (see
//! [`Limits::max_connecting_per_ip`]).
//!
//! Memory is bounded: the per-address map only holds addresses with a
//! handshake in progress and one entry per handshake, so it never holds
//! more than [`Limits::max_handshakes`] of them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use wsline_proto::handshake::Response;

/// The caps a [`Gate`] enforces.
///
/// ```
/// let mut limits = wsline::Limits::default();
/// limits.max_connections = 50_000;
/// limits.max_connecting_per_ip = 8;
/// limits.stalled_after = std::time::Duration::from_millis(500);
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
    /// request is read and the connection is admitted (default 4096).
    /// Past it a new TCP connection is refused at once, before anything is
    /// read: this is what bounds slowloris clients that trickle their
    /// request. `usize::MAX`: no cap. Unless `max_connecting_per_ip` is 0,
    /// one address (IPv4, or IPv6 /64) may hold at most half of it, so a
    /// single address never shuts the others out.
    pub max_handshakes: usize,
    /// Stalled handshakes one IPv4 address or one IPv6 /64 may hold
    /// (default 64; 0: no per-address rule at all, not this one nor the
    /// half-of-the-pool share). A handshake is stalled once it has been in
    /// progress for [`Limits::stalled_after`]; an address holding this
    /// many gets no new handshake until some end (finish, or meet the
    /// handshake timeout). Prompt clients finish in milliseconds and never
    /// count, so a burst of them from one address (a load test, a NAT, a
    /// carrier's gateway, a proxy) is admitted whole, up to the share.
    /// (RFC 6455 §4.1's one-connection-at-a-time rule is a client's rule;
    /// this is the server's defence against clients that break it and
    /// stall.) Behind a reverse proxy every client has the proxy's
    /// address: set 0 there and let the proxy limit its clients.
    pub max_connecting_per_ip: usize,
    /// When a handshake in progress counts as stalled for
    /// `max_connecting_per_ip` (default 3 s: a client's request normally
    /// follows its connect within a round trip, but a busy client process,
    /// hundreds of handshakes at once from one interpreter, may take a
    /// second or two to send them all).
    pub stalled_after: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_handshakes: 4096,
            max_connecting_per_ip: 64,
            stalled_after: Duration::from_secs(3),
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
    /// [`Limits::max_connecting_per_ip`] handshakes from this address have
    /// stalled (been in progress for [`Limits::stalled_after`]).
    #[error("too many stalled handshakes from {ip} ({limit}); a client should finish one handshake before it opens more connections (RFC 6455 §4.1)")]
    ConnectingPerIp {
        /// The address (an IPv6 address stands for its /64).
        ip: IpAddr,
        /// The cap.
        limit: usize,
    },
    /// This address holds half of [`Limits::max_handshakes`], its share.
    #[error("too many handshakes in progress from {ip} ({limit}, half of the server's handshake slots); retry later")]
    AddressShare {
        /// The address (an IPv6 address stands for its /64).
        ip: IpAddr,
        /// The share.
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
    /// The handshakes in progress of each address, by admission number,
    /// with the time each was admitted: in admission order, so the oldest
    /// come first.
    per_ip: HashMap<IpAddr, BTreeMap<u64, Instant>>,
    /// The next admission number.
    next: u64,
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
        self.admit_at(peer, Instant::now())
    }

    /// [`Gate::admit`] at `now` (a virtual clock in tests; the instants
    /// given to one gate must not go backwards).
    pub fn admit_at(&self, peer: IpAddr, now: Instant) -> Result<Handshake, Refusal> {
        let limits = &self.inner.limits;
        let key = address_key(peer);
        let mut counts = self.inner.counts();
        if counts.handshakes >= limits.max_handshakes {
            return Err(self
                .inner
                .refuse(Refusal::Handshakes(limits.max_handshakes)));
        }
        let seq = counts.next;
        if limits.max_connecting_per_ip > 0 {
            let share = (limits.max_handshakes / 2).max(1);
            let stall_cap = limits.max_connecting_per_ip;
            let cutoff = now.checked_sub(limits.stalled_after);
            let entry = counts.per_ip.entry(key).or_default();
            if entry.len() >= share {
                return Err(self.inner.refuse(Refusal::AddressShare {
                    ip: key,
                    limit: share,
                }));
            }
            // The oldest come first: `stall_cap` of them stalled is the
            // `stall_cap`-th oldest having started before the cutoff.
            let stalled = entry.len() >= stall_cap
                && cutoff.is_some_and(|cutoff| {
                    entry
                        .values()
                        .nth(stall_cap - 1)
                        .is_some_and(|&started| started <= cutoff)
                });
            if stalled {
                return Err(self.inner.refuse(Refusal::ConnectingPerIp {
                    ip: key,
                    limit: stall_cap,
                }));
            }
            entry.insert(seq, now);
        }
        counts.next += 1;
        counts.handshakes += 1;
        Ok(Handshake {
            gate: self.inner.clone(),
            key,
            seq,
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
    seq: u64,
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
        if let Some(started) = counts.per_ip.get_mut(&self.key) {
            started.remove(&self.seq);
            if started.is_empty() {
                counts.per_ip.remove(&self.key);
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
            stalled_after: Duration::from_secs(1),
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
    fn a_burst_of_prompt_handshakes_from_one_address_is_admitted_up_to_half_the_pool() {
        let gate = Gate::new(Limits::default());
        let t0 = Instant::now();
        let permits: Vec<_> = (0..1000)
            .map(|_| gate.admit_at(ip("127.0.0.1"), t0).expect("a prompt burst"))
            .collect();
        assert_eq!(gate.stats().handshakes, 1000);
        drop(permits);
        // Half of the pool is one address's share, the rest is for others.
        let gate = Gate::new(limits(100, 10, 64));
        let held: Vec<_> = (0..5)
            .map(|_| gate.admit_at(ip("10.0.0.1"), t0).unwrap())
            .collect();
        assert_eq!(
            gate.admit_at(ip("10.0.0.1"), t0).unwrap_err(),
            Refusal::AddressShare {
                ip: ip("10.0.0.1"),
                limit: 5
            }
        );
        let others: Vec<_> = (0..5)
            .map(|i| gate.admit_at(ip(&format!("10.0.1.{i}")), t0).unwrap())
            .collect();
        assert_eq!((held.len(), others.len()), (5, 5));
    }

    #[test]
    fn stalled_handshakes_cap_an_address_prompt_ones_do_not() {
        let gate = Gate::new(limits(100, 100, 2));
        let t0 = Instant::now();
        let a = gate.admit_at(ip("10.0.0.1"), t0).unwrap();
        let b = gate.admit_at(ip("10.0.0.1"), t0).unwrap();
        // Not stalled yet: more are admitted at once.
        let c = gate.admit_at(ip("10.0.0.1"), t0).unwrap();
        drop(c);
        // A second later two have stalled: the address gets no more...
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            gate.admit_at(ip("10.0.0.1"), t1).unwrap_err(),
            Refusal::ConnectingPerIp {
                ip: ip("10.0.0.1"),
                limit: 2
            }
        );
        // ...other addresses do...
        let _other = gate.admit_at(ip("10.0.0.2"), t1).unwrap();
        // ...and once one of its stalled handshakes ends, it does again.
        drop(a);
        let d = gate.admit_at(ip("10.0.0.1"), t1).unwrap();
        // One stalled (b) and one fresh (d): not two stalled.
        let _e = gate.admit_at(ip("10.0.0.1"), t1).unwrap();
        drop((b, d));
        assert_eq!(gate.stats().refused, 1);
    }

    #[test]
    fn per_ip_rules_count_one_address_and_its_v6_prefix() {
        let gate = Gate::new(limits(10, 4, 64));
        let t0 = Instant::now();
        let _a = gate.admit_at(ip("2001:db8::1"), t0).unwrap();
        let _b = gate.admit_at(ip("2001:db8::ffff:2"), t0).unwrap();
        assert!(matches!(
            gate.admit_at(ip("2001:db8::3"), t0),
            Err(Refusal::AddressShare { limit: 2, .. })
        ));
        let _other = gate.admit_at(ip("2001:db8:0:1::1"), t0).unwrap();
        let _v4 = gate.admit_at(ip("192.0.2.1"), t0).unwrap();
        let gate = Gate::new(limits(10, 4, 64));
        let _v4 = gate.admit_at(ip("192.0.2.1"), t0).unwrap();
        let _mapped = gate.admit_at(ip("::ffff:192.0.2.1"), t0).unwrap();
        assert!(
            gate.admit_at(ip("192.0.2.1"), t0).is_err(),
            "mapped = same address"
        );
    }

    #[test]
    fn zero_turns_every_per_address_rule_off() {
        let gate = Gate::new(limits(100, 10, 0));
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(60);
        let held: Vec<_> = (0..10)
            .map(|i| {
                gate.admit_at(ip("10.0.0.1"), if i < 5 { t0 } else { later })
                    .unwrap()
            })
            .collect();
        assert_eq!(gate.stats().addresses, 0);
        assert_eq!(
            gate.admit_at(ip("10.0.0.1"), later).unwrap_err(),
            Refusal::Handshakes(10)
        );
        drop(held);
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
