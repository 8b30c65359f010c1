//! Listening sockets for several reactors on one address: one event loop
//! per core, each with a listener of its own.
//!
//! On Linux each loop gets its own socket bound with `SO_REUSEPORT`, and
//! the kernel spreads new connections across them by a hash of the
//! client's address and port (no lock, no thundering herd). Elsewhere
//! `SO_REUSEPORT` does not balance, so the loops share one socket (each
//! holds a duplicate of it; whichever loop accepts first gets the
//! connection).

use std::io;
use std::net::{SocketAddr, TcpListener};

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

#[cfg(test)]
mod tests {
    use super::*;

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
