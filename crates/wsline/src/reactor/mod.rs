//! A server event loop that owns many connections on one thread, with no
//! task per connection: uWebSockets' model, on the sans-IO core.
//!
//! Owns the listener, readiness (epoll through mio), one receive buffer
//! shared by every connection of the loop, the deadlines of every
//! connection (one heap, `timers`), admission through the [`Gate`], and
//! graceful shutdown. Each connection is a slot (`slot`): its socket, a
//! few flags and either its handshake state or its open state (the
//! [`Connection`](wsline_proto::Connection)), each boxed and freed when
//! done with. An idle open connection holds no read or write buffer.
//!
//! The application answers through callbacks ([`Handler`]) given a
//! [`Conn`] for the connection at hand. Everything a [`crate::WebSocket`]
//! server does, this does too (the same handshake checks, limits and
//! timers, from the same [`ServerConfig`]). A connection can also be
//! served for something that happened elsewhere: [`ReactorHandle::waker`]
//! gives a `std::task::Waker` for it, callable from any thread, after
//! which the loop calls [`Handler::on_wake`] (`wake`: say a publication
//! was queued for it on another loop); and [`ReactorHandle::adopt`] hands
//! the loop a connection accepted elsewhere, with what was read from it.
//! A loop runs on one thread; for a loop per core, [`bind_listeners`]
//! gives each its own listening socket on the same port.
//!
//! ```no_run
//! use wsline::reactor::{Conn, Handler, Reactor};
//! use wsline::{Gate, Message, ServerConfig};
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn on_message(&mut self, conn: &mut Conn<'_>, message: Message) {
//!         let _ = conn.send(message);
//!     }
//! }
//!
//! let listener = std::net::TcpListener::bind("127.0.0.1:9001")?;
//! let config = ServerConfig::default();
//! let gate = Gate::new(config.limits);
//! Reactor::new(listener, config, gate, Echo)?.run()?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod listen;
mod slot;
mod timers;
mod wake;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Waker as TaskWaker;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use wsline_proto::{Message, Termination};

pub use listen::{bind_listeners, defer_accept};
pub use slot::Conn;
use slot::{Loop, Slot, Step};
use timers::{Timers, NOT_SCHEDULED};

use crate::accept::{is_transient_accept_error, ACCEPT_BACKOFF};
use crate::driver::RequestHead;
use crate::{Acceptance, Gate, Request, Response, ServerConfig};

/// The size of the loop's shared receive buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;
/// Connections accepted per turn before others get theirs.
const ACCEPT_BATCH: usize = 128;

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

/// Identifies a connection of a reactor while it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId(u64);

impl ConnId {
    fn new(index: u32, gen: u32) -> Self {
        Self((u64::from(gen) << 32) | u64::from(index))
    }

    fn index(self) -> u32 {
        self.0 as u32
    }

    fn gen(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// The slot's index alone: it fits a `usize` on every platform. A
    /// freed index is reused only after the batch of events it was freed
    /// in, so an event never reaches the wrong connection.
    fn token(self) -> Token {
        Token(self.index() as usize)
    }
}

/// What the application does with the reactor's connections. Every method
/// runs on the reactor's thread and must not block.
pub trait Handler {
    /// A request passed the RFC checks and the Origin policy: accept it
    /// (optionally choosing a subprotocol or adding headers) or refuse it
    /// with a response such as `Response::reject(401, "token required")`.
    /// Default: accept.
    fn on_request(&mut self, request: &Request) -> Result<Acceptance, Response> {
        let _ = request;
        Ok(Acceptance::default())
    }

    /// The connection is open (the 101 is queued).
    fn on_open(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// A complete message arrived.
    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message);

    /// Someone woke the connection ([`ReactorHandle::waker`]), say because
    /// a message for it was queued on another thread: send it now. Called
    /// once for any number of wakes since the last call, and only while
    /// the connection is open. Default: nothing.
    fn on_wake(&mut self, conn: &mut Conn<'_>) {
        let _ = conn;
    }

    /// The connection ended, how is in `termination` (1006 when the
    /// transport failed or stalled; `termination.is_normal()` for 1000,
    /// 1001 or an empty Close). The last call for this connection.
    fn on_close(&mut self, id: ConnId, termination: &Termination) {
        let _ = (id, termination);
    }
}

/// Stops a running reactor gracefully, from any thread: no more accepts,
/// every open connection gets Close 1001 and up to the close timeout (plus
/// a second) to finish, then [`Reactor::run`] returns.
#[derive(Clone, Debug)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    stop: AtomicBool,
    waker: Waker,
    connections: AtomicUsize,
    /// Connections woken from other threads ([`ReactorHandle::waker`]).
    woken: wake::Woken,
    /// Connections handed over by [`ReactorHandle::adopt`], not yet taken
    /// by the loop (each holds a handshake permit, so the gate bounds
    /// them).
    adopted: std::sync::Mutex<Vec<Adopted>>,
}

/// A connection accepted elsewhere, for the loop to serve.
#[derive(Debug)]
struct Adopted {
    stream: std::net::TcpStream,
    permit: crate::Handshake,
    read: Vec<u8>,
}

impl ReactorHandle {
    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Err(e) = self.shared.waker.wake() {
            tracing::warn!("cannot wake the reactor: {e}");
        }
    }

    /// Connections the loop holds (in their handshake, open or closing).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Hands the loop a connection accepted elsewhere, in its opening
    /// handshake: `permit` is its handshake slot from the loop's [`Gate`]
    /// (say from [`Gate::admit`]), `read` what was already read from it
    /// (the start of the request head, or all of it, and any frame bytes
    /// behind it). From there the loop serves it as one it accepted
    /// itself: the rest of the head, the handshake deadline (counted from
    /// now), [`Handler::on_request`], the 101, [`Handler::on_open`]. A
    /// connection handed to a loop that is stopping is closed.
    pub fn adopt(&self, stream: std::net::TcpStream, permit: crate::Handshake, read: Vec<u8>) {
        self.shared
            .adopted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Adopted {
                stream,
                permit,
                read,
            });
        if let Err(e) = self.shared.waker.wake() {
            tracing::warn!("cannot wake the reactor: {e}");
        }
    }

    /// A waker for connection `id`, to call from any thread: the loop
    /// then calls [`Handler::on_wake`] for it (once for any number of
    /// wakes in between). One allocation per call; keep it for the
    /// connection's life. Waking a connection that has ended does
    /// nothing.
    pub fn waker(&self, id: ConnId) -> TaskWaker {
        TaskWaker::from(Arc::new(wake::ConnWaker {
            shared: self.shared.clone(),
            id,
            queued: AtomicBool::new(false),
        }))
    }
}

/// A server loop: accepts on a listener and runs every connection on the
/// calling thread. See the [module documentation](self).
pub struct Reactor<H> {
    poll: Poll,
    listener: Option<TcpListener>,
    shared: Arc<Shared>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Freed during this turn; reusable from the next one.
    freed: Vec<u32>,
    next_gen: u32,
    timers: Timers,
    /// Slots that still had input when their read budget ran out.
    ready: Vec<ConnId>,
    accept_more: bool,
    /// Accepted sockets come with TCP_NODELAY from the listener.
    nodelay_inherited: bool,
    /// The listener defers accepts ([`defer_accept`]): a connection comes
    /// with its request, read as it is accepted.
    deferred: bool,
    accept_paused_until: Option<Instant>,
    stopping: Option<Instant>,
    lp: Loop<H>,
}

impl<H: Handler> Reactor<H> {
    /// A reactor for `listener` (made non-blocking here) serving with
    /// `config`; `gate` counts and caps connections (share it to read its
    /// [`Gate::stats`] from elsewhere).
    pub fn new(
        listener: std::net::TcpListener,
        config: ServerConfig,
        gate: Gate,
        handler: H,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        // Linux gives accepted sockets the listener's TCP_NODELAY: set
        // once here instead of once per connection.
        let nodelay_inherited = cfg!(target_os = "linux")
            && socket2::SockRef::from(&listener)
                .set_tcp_nodelay(true)
                .is_ok();
        let deferred = listen::is_deferred(&listener);
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        Ok(Self {
            poll,
            listener: Some(listener),
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                waker,
                connections: AtomicUsize::new(0),
                woken: wake::Woken::default(),
                adopted: std::sync::Mutex::default(),
            }),
            slots: Vec::new(),
            free: Vec::new(),
            freed: Vec::new(),
            next_gen: 0,
            timers: Timers::new(Instant::now()),
            ready: Vec::new(),
            accept_more: false,
            nodelay_inherited,
            deferred,
            accept_paused_until: None,
            stopping: None,
            lp: Loop {
                config,
                gate,
                handler,
                buf: vec![0u8; READ_BUFFER].into_boxed_slice(),
                ready: Vec::new(),
            },
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.listener {
            Some(l) => l.local_addr(),
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the reactor stopped listening",
            )),
        }
    }

    /// A handle to stop the loop and read its counts from another thread.
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle {
            shared: self.shared.clone(),
        }
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.lp.handler
    }

    /// Runs until [`ReactorHandle::shutdown`] has finished its work.
    /// Returns an error only if waiting for readiness itself fails.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let now = Instant::now();
            let timeout = self.poll_timeout(now);
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_more = true,
                    WAKER => {
                        if self.shared.stop.load(Ordering::SeqCst) && self.stopping.is_none() {
                            self.begin_shutdown(now);
                        }
                        for id in self.shared.woken.take() {
                            self.drive_as(id, now, true);
                        }
                        self.take_adopted(now);
                    }
                    token => {
                        let index = token.0 as u32;
                        let slot = match self.slots.get_mut(index as usize) {
                            Some(Some(slot)) => slot,
                            _ => continue,
                        };
                        let id = ConnId::new(index, slot.gen);
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            slot.readable = true;
                        }
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            slot.writable = true;
                        }
                        self.drive(id, now);
                    }
                }
            }
            for id in std::mem::take(&mut self.ready) {
                self.drive(id, now);
            }
            if self.accept_more && self.accept_paused_until.is_none_or(|t| now >= t) {
                self.accept(now);
            }
            while let Some((at, index, gen)) = self.timers.pop_due(now) {
                let id = ConnId::new(index, gen);
                let Some(slot) = self.slot_mut(id) else {
                    continue;
                };
                if slot.scheduled == at {
                    slot.scheduled = NOT_SCHEDULED;
                    self.drive(id, now);
                }
            }
            // Slots freed this turn may take new connections from now on.
            self.free.append(&mut self.freed);
            if self.timers.len() > 4 * self.slots.len() + 1024 {
                self.reschedule_all();
            }
            if let Some(deadline) = self.stopping {
                if self.live() == 0 {
                    return Ok(());
                }
                if now >= deadline {
                    self.drop_all(now);
                    return Ok(());
                }
            }
        }
    }

    fn live(&self) -> usize {
        self.slots.len() - self.free.len() - self.freed.len()
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || !self.lp.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        let accept_at = if self.accept_more {
            Some(self.accept_paused_until.unwrap_or(now))
        } else {
            None
        };
        [self.timers.next(), accept_at, self.stopping]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn slot_mut(&mut self, id: ConnId) -> Option<&mut Slot> {
        match self.slots.get_mut(id.index() as usize) {
            Some(Some(slot)) if slot.gen == id.gen() => Some(slot),
            _ => None,
        }
    }

    /// Accepts what the listener has, up to a batch.
    fn accept(&mut self, now: Instant) {
        self.accept_paused_until = None;
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = &self.listener else {
                self.accept_more = false;
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_more = false;
                    return;
                }
                Err(e) if is_transient_accept_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors and the like: keep serving the
                    // open connections and try again shortly.
                    tracing::warn!("accept failed: {e}");
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    return;
                }
            };
            // Past a cap: answered and closed here, no slot.
            let permit = match self.lp.gate.admit(peer.ip()) {
                Ok(permit) => permit,
                Err(refusal) => {
                    tracing::debug!(%peer, "refused: {refusal}");
                    refusal.refuse_nonblocking(&mut stream);
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    continue;
                }
            };
            if !self.nodelay_inherited {
                let _ = stream.set_nodelay(true);
            }
            let id = match self.register(&mut stream) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!(%peer, "cannot watch the connection: {e}");
                    continue;
                }
            };
            let index = id.index();
            let head = RequestHead::new(&self.lp.config, now);
            let deadline = head.deadline();
            self.slots[index as usize] = Some(Slot::handshake(stream, id.gen(), permit, head));
            self.shared.connections.fetch_add(1, Ordering::Relaxed);
            tracing::trace!(%peer, "accepted");
            self.schedule(id, Some(deadline));
            if self.deferred {
                // The request came with the connection: answer it now
                // rather than after another wait for readiness.
                if let Some(slot) = self.slot_mut(id) {
                    slot.readable = true;
                }
                self.drive(id, now);
            }
        }
        // More may wait: the next turn accepts them after the others ran.
    }

    /// Serves the connections [`ReactorHandle::adopt`] handed over.
    fn take_adopted(&mut self, now: Instant) {
        let adopted = std::mem::take(
            &mut *self
                .shared
                .adopted
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for Adopted {
            stream,
            permit,
            read,
        } in adopted
        {
            if self.stopping.is_some() {
                continue; // dropped: closed, its permit released
            }
            if let Err(e) = stream.set_nonblocking(true) {
                tracing::debug!("cannot adopt a connection: {e}");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let mut stream = mio::net::TcpStream::from_std(stream);
            let id = match self.register(&mut stream) {
                Ok(id) => id,
                Err(e) => {
                    tracing::warn!("cannot watch an adopted connection: {e}");
                    continue;
                }
            };
            let index = id.index();
            let head = RequestHead::new(&self.lp.config, now);
            let deadline = head.deadline();
            let mut slot = Slot::handshake(stream, id.gen(), permit, head);
            // Registered edge-triggered after bytes may have arrived: read.
            slot.readable = true;
            self.slots[index as usize] = Some(slot);
            self.shared.connections.fetch_add(1, Ordering::Relaxed);
            self.schedule(id, Some(deadline));
            let Some(Some(slot)) = self.slots.get_mut(index as usize) else {
                continue;
            };
            let step = slot.receive_head(id, &read, now, &mut self.lp);
            self.after_turn(id, step);
        }
    }

    /// Takes a free slot index (or a new one) for `stream`, gives it the
    /// next generation and watches the socket under that id. On failure
    /// the index goes back to the free list.
    fn register(&mut self, stream: &mut mio::net::TcpStream) -> io::Result<ConnId> {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        };
        self.next_gen = self.next_gen.wrapping_add(1);
        let id = ConnId::new(index, self.next_gen);
        if let Err(e) = self.poll.registry().register(
            stream,
            id.token(),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.free.push(index);
            return Err(e);
        }
        Ok(id)
    }

    /// Gives connection `id` its turn: its deadlines, input, output.
    fn drive(&mut self, id: ConnId, now: Instant) {
        self.drive_as(id, now, false);
    }

    /// [`drive`](Self::drive), after [`Handler::on_wake`] when `woken`.
    fn drive_as(&mut self, id: ConnId, now: Instant, woken: bool) {
        let index = id.index() as usize;
        let Some(Some(slot)) = self.slots.get_mut(index) else {
            return;
        };
        if slot.gen != id.gen() {
            return;
        }
        let step = if woken {
            slot.wake(id, now, &mut self.lp)
        } else {
            slot.drive(id, now, &mut self.lp)
        };
        self.after_turn(id, step);
    }

    /// Keeps or frees slot `id` after its turn.
    fn after_turn(&mut self, id: ConnId, step: Step) {
        let index = id.index() as usize;
        match step {
            Step::Keep(next) => {
                for more in self.lp.ready.drain(..) {
                    self.ready.push(more);
                }
                self.schedule(id, next);
            }
            Step::Remove => {
                self.lp.ready.clear();
                self.slots[index] = None;
                self.freed.push(id.index());
                self.shared.connections.fetch_sub(1, Ordering::Relaxed);
                self.shrink();
            }
        }
    }

    /// Schedules `id`'s next deadline if it is earlier than the one in the heap.
    fn schedule(&mut self, id: ConnId, next: Option<Instant>) {
        let Some(at) = next else { return };
        let Some(Some(slot)) = self.slots.get_mut(id.index() as usize) else {
            return;
        };
        if slot.gen != id.gen() {
            return;
        }
        let tick = self.timers.tick_at(at);
        if tick < slot.scheduled {
            slot.scheduled = tick;
            self.timers.push(tick, id.index(), id.gen());
        }
    }

    /// Rebuilds the heap from the slots' scheduled deadlines (stale
    /// entries piled up).
    fn reschedule_all(&mut self) {
        self.timers.clear();
        for (index, slot) in self.slots.iter().enumerate() {
            if let Some(slot) = slot {
                if slot.scheduled != NOT_SCHEDULED {
                    self.timers.push(slot.scheduled, index as u32, slot.gen);
                }
            }
        }
    }

    /// Gives memory back once most slots are free (after a burst).
    fn shrink(&mut self) {
        if self.live() == 0 && self.slots.capacity() > 1024 {
            self.slots = Vec::new();
            self.free = Vec::new();
            self.freed = Vec::new();
            self.timers.clear();
        }
    }

    fn begin_shutdown(&mut self, now: Instant) {
        tracing::debug!("shutting down: {} connections", self.live());
        self.listener = None;
        self.accept_more = false;
        self.stopping = Some(now + crate::shutdown_grace(self.lp.config.protocol.close_timeout));
        let ids: Vec<ConnId> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| ConnId::new(i as u32, s.gen)))
            .collect();
        for id in ids {
            if let Some(slot) = self.slot_mut(id) {
                let (code, reason) = crate::SHUTDOWN_CLOSE;
                slot.start_close(code, reason, now);
            }
            self.drive(id, now);
        }
    }

    /// The shutdown ran out of time: every connection still here ends now.
    fn drop_all(&mut self, now: Instant) {
        for index in 0..self.slots.len() {
            if let Some(mut slot) = self.slots[index].take() {
                let id = ConnId::new(index as u32, slot.gen);
                slot.abandon(id, now, &mut self.lp);
                self.shared.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl<H> Drop for Reactor<H> {
    fn drop(&mut self) {
        // Queued wakers hold the shared state: let it go with the loop;
        // connections handed over and never taken are closed.
        let _ = self.shared.woken.take();
        self.shared
            .adopted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl<H> std::fmt::Debug for Reactor<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("slots", &self.slots.len())
            .field("stopping", &self.stopping.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nothing;
    impl Handler for Nothing {
        fn on_message(&mut self, _: &mut Conn<'_>, _: Message) {}
    }

    struct Echo;
    impl Handler for Echo {
        fn on_message(&mut self, conn: &mut Conn<'_>, message: Message) {
            let _ = conn.send(message);
        }
    }

    /// Connections accepted on another listener and handed over, with
    /// none, part or all of their request head read already, are served
    /// as the loop's own: the rest of the head, the 101, then messages
    /// both ways.
    #[test]
    fn an_adopted_connection_is_served_like_an_accepted_one() {
        use std::io::Read;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gate = Gate::default();
        let mut reactor =
            Reactor::new(listener, ServerConfig::default(), gate.clone(), Echo).unwrap();
        let handle = reactor.handle();
        let thread = std::thread::spawn(move || reactor.run());
        let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = elsewhere.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // Bytes read before the hand-over: none, the first 5, the whole
        // head (one read of a fresh request usually takes it all).
        for take in [Some(0), Some(5), None] {
            // The other acceptor: accepts, reads, hands over.
            let (gate, handle, elsewhere) =
                (gate.clone(), handle.clone(), elsewhere.try_clone().unwrap());
            let acceptor = std::thread::spawn(move || {
                let (mut stream, peer) = elsewhere.accept().unwrap();
                let mut read = vec![0; 4096];
                let n = match take {
                    Some(n) => {
                        stream.read_exact(&mut read[..n]).unwrap();
                        n
                    }
                    None => stream.read(&mut read).unwrap(),
                };
                read.truncate(n);
                let permit = gate.admit(peer.ip()).expect("a handshake slot");
                handle.adopt(stream, permit, read);
            });
            rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(10), async {
                    let (mut ws, _) = crate::connect(&format!("ws://{addr}/"))
                        .await
                        .expect("connect through the adopting loop");
                    ws.send(Message::text("hello")).await.unwrap();
                    let echo = ws.recv().await.expect("open").expect("echo");
                    assert_eq!(echo, Message::text("hello"));
                    ws.close(crate::CloseCode::NORMAL, "").await.unwrap();
                    while let Some(Ok(_)) = ws.recv().await {}
                })
                .await
                .expect("served within 10 s");
            });
            acceptor.join().unwrap();
        }
        handle.shutdown();
        thread.join().unwrap().unwrap();
        assert_eq!(handle.connections(), 0);
    }

    /// Replies to small messages must not wait for ACKs (Nagle): every
    /// accepted socket has TCP_NODELAY, inherited or set.
    #[test]
    fn accepted_sockets_have_nodelay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reactor =
            Reactor::new(listener, ServerConfig::default(), Gate::default(), Nothing).unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let listener = reactor.listener.as_ref().unwrap();
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        if !reactor.nodelay_inherited {
            stream.set_nodelay(true).unwrap();
        }
        assert!(stream.nodelay().unwrap());
    }
}
