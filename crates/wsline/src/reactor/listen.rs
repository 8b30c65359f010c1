//! Listening sockets: several reactors on one address (one event loop per
//! core, each with a listener of its own), and deferred accepts.
//!
//! On Linux each loop gets its own socket bound with `SO_REUSEPORT`, and
//! the kernel spreads new connections across them by a hash of the
//! client's address and port (no lock, no thundering herd). Elsewhere
//! `SO_REUSEPORT` does not balance, so the loops share one socket (each
//! holds a duplicate of it; whichever loop accepts first gets the
//! connection).
//!
//! [`defer_accept`] has the kernel hand over a connection only once its
//! first bytes are there (Linux `TCP_DEFER_ACCEPT`); the reactor then reads
//! the request at once instead of waiting to be told it came.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

/// Pending connections each listening socket may queue (tokio's default;
/// the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// Binds `count` listening sockets to `addr`, one for each
/// [`Reactor`](super::Reactor) of a server that runs a loop per core.
///
/// With port 0 the first socket picks a free port and the others join it:
/// every listener's [`local_addr`](TcpListener::local_addr) is the same.
/// `count` 0 is taken as 1.
///
/// ```no_run
/// use wsline::reactor::{bind_listeners, Conn, Handler, Reactor};
/// use wsline::{Gate, Message, ServerConfig};
///
/// #[derive(Clone)]
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&mut self, conn: &mut Conn<'_>, message: Message) {
///         let _ = conn.send(message);
///     }
/// }
///
/// let config = ServerConfig::default();
/// let gate = Gate::new(config.limits); // shared: the limits are for the server
/// let mut threads = Vec::new();
/// for listener in bind_listeners("127.0.0.1:9001".parse().unwrap(), 2)? {
///     let mut reactor = Reactor::new(listener, config.clone(), gate.clone(), Echo)?;
///     threads.push(std::thread::spawn(move || reactor.run()));
/// }
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// The address cannot be bound (in use, not local, no permission), or
/// the system refuses a socket option.
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let count = count.max(1);
    let first = bind_one(addr)?;
    let mut listeners = Vec::with_capacity(count);
    let bound = first.local_addr()?;
    listeners.push(first);
    while listeners.len() < count {
        listeners.push(if cfg!(target_os = "linux") {
            bind_one(bound)?
        } else {
            listeners[0].try_clone()?
        });
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // As std and tokio do on Unix: a restarted server can bind at once
    // while old connections sit in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if cfg!(target_os = "linux") {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// Has the kernel hand over `listener`'s connections only once the
/// client's first bytes have arrived (Linux `TCP_DEFER_ACCEPT`, what
/// nginx calls `deferred`). A WebSocket client always speaks first (its
/// upgrade request), so no client waits for this; what it saves is a
/// wake-up per connection: the server is woken once, when the request is
/// there, instead of when the TCP handshake completes and again when the
/// request follows. A [`Reactor`](super::Reactor) on such a listener reads
/// each request as it accepts the connection. Measured with 8 handshakes
/// at a time on a 2-core VM, where waking an idle core goes through the
/// hypervisor: about 25% more handshakes per second and 10–16% less
/// server CPU per handshake (docs/performance.md). Call it before
/// [`Reactor::new`](super::Reactor::new), which looks at the listener
/// once.
///
/// The price: a connection that sends nothing stays in the kernel for
/// about `silent_for` (rounded up to whole seconds; the kernel resends its
/// SYN-ACK meanwhile) before it is handed over anyway; until then neither
/// the [`Limits`](crate::Limits) nor the handshake timeout see it, and it
/// holds no descriptor. A zero `silent_for` turns deferring off.
///
/// ```no_run
/// let listener = std::net::TcpListener::bind("127.0.0.1:9001")?;
/// wsline::reactor::defer_accept(&listener, std::time::Duration::from_secs(1))?;
/// # Ok::<(), std::io::Error>(())
/// ```
///
/// # Errors
///
/// `Unsupported` on systems other than Linux; the system's error if it
/// refuses the option.
pub fn defer_accept(listener: &TcpListener, silent_for: Duration) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let secs = silent_for.as_secs() + u64::from(silent_for.subsec_nanos() > 0);
        let value = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
        // SAFETY: the descriptor belongs to `listener`, which outlives the
        // call; the option value is a live c_int and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (listener, silent_for);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "deferred accepts (TCP_DEFER_ACCEPT) exist on Linux only",
        ))
    }
}

/// Whether `listener` defers its accepts ([`defer_accept`]): its
/// connections arrive with their first bytes.
pub(super) fn is_deferred(listener: &TcpListener) -> bool {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: the descriptor belongs to `listener`; the kernel writes
        // at most `len` bytes into the live c_int and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                listener.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                std::ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        };
        rc == 0 && value > 0
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = listener;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::time::Instant;

    /// Accepts from a non-blocking `listener` until `deadline`.
    fn accept_by(listener: &TcpListener, deadline: Instant) -> Option<std::net::TcpStream> {
        loop {
            match listener.accept() {
                Ok((s, _)) => return Some(s),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_deferred_listener_hands_over_a_connection_with_its_first_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(!is_deferred(&listener));
        defer_accept(&listener, Duration::from_millis(1500)).unwrap();
        assert!(is_deferred(&listener));
        listener.set_nonblocking(true).unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        // Connected on the client's side, but not handed over while silent.
        let quiet = Instant::now() + Duration::from_millis(300);
        assert!(
            accept_by(&listener, quiet).is_none(),
            "accepted before any byte"
        );
        client.write_all(b"GET").unwrap();
        let mut accepted = accept_by(&listener, Instant::now() + Duration::from_secs(5))
            .expect("handed over once bytes arrived");
        accepted.set_nonblocking(false).unwrap();
        let mut got = [0u8; 3];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"GET");
        // Zero turns it off again.
        defer_accept(&listener, Duration::ZERO).unwrap();
        assert!(!is_deferred(&listener));
    }

    #[test]
    fn every_listener_shares_the_port_picked_for_the_first() {
        let listeners = bind_listeners("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_eq!(listeners.len(), 3);
        let addr = listeners[0].local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        for l in &listeners {
            assert_eq!(l.local_addr().unwrap(), addr);
        }
        // Every connection is accepted by one of them.
        let clients: Vec<_> = (0..12)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        let mut accepted = 0;
        for l in &listeners {
            l.set_nonblocking(true).unwrap();
            while l.accept().is_ok() {
                accepted += 1;
            }
        }
        assert_eq!(accepted, clients.len());
        assert_eq!(
            bind_listeners("127.0.0.1:0".parse().unwrap(), 0)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_port_in_use_by_a_plain_listener_is_refused() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_listeners(taken.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
