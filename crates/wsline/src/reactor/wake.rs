//! Waking one connection of a reactor from any thread.
//!
//! Owns the [`std::task::Waker`] a [`ReactorHandle`](super::ReactorHandle)
//! gives for a connection and the loop's queue of woken connections. A
//! wake queues the connection (at most once until the loop takes it: the
//! queue never holds more entries than there are wakers) and wakes the
//! loop's poll; the loop then calls [`Handler::on_wake`](super::Handler::on_wake)
//! for it with a [`Conn`](super::Conn) to send on, and writes what was
//! queued. This is how a connection's outbox, filled by a publisher on
//! another thread, gets its connection served without a task per
//! connection. A wake for a connection that has ended is ignored.
//!
//! What it does not own: what the application keeps to send (an outbox);
//! the wake only says "look at this connection".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Wake;

use super::{ConnId, Shared};

/// The wakers queued since the loop last looked.
#[derive(Debug, Default)]
pub(super) struct Woken(Mutex<Vec<Arc<ConnWaker>>>);

impl Woken {
    /// Takes the queue, each entry unmarked so it can be queued again.
    pub(super) fn take(&self) -> Vec<ConnId> {
        let taken = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        taken
            .into_iter()
            .map(|w| {
                w.queued.store(false, Ordering::Release);
                w.id
            })
            .collect()
    }

    fn push(&self, waker: Arc<ConnWaker>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(waker);
    }
}

/// One connection's waker.
#[derive(Debug)]
pub(super) struct ConnWaker {
    pub(super) shared: Arc<Shared>,
    pub(super) id: ConnId,
    /// In the loop's queue now.
    pub(super) queued: AtomicBool,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        self.shared.woken.push(self.clone());
        if let Err(e) = self.shared.waker.wake() {
            tracing::warn!("cannot wake the reactor: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::super::{Conn, Handler, Reactor};
    use crate::{Gate, Message, ServerConfig};
    use wsline_proto::Termination;

    use super::*;

    /// What another thread hands a connection to send.
    type Mailbox = Arc<Mutex<VecDeque<String>>>;

    /// Sends nothing on its own: only what is in the mailbox, when woken.
    struct Pushed {
        mailbox: Mailbox,
        opened: mpsc::Sender<ConnId>,
        closed: mpsc::Sender<()>,
        wakes: Arc<Mutex<usize>>,
    }

    impl Handler for Pushed {
        fn on_open(&mut self, conn: &mut Conn<'_>) {
            let _ = self.opened.send(conn.id());
        }

        fn on_message(&mut self, _: &mut Conn<'_>, _: Message) {}

        fn on_wake(&mut self, conn: &mut Conn<'_>) {
            *self.wakes.lock().unwrap() += 1;
            while let Some(text) = self.mailbox.lock().unwrap().pop_front() {
                conn.send(Message::text(text)).expect("send while open");
            }
        }

        fn on_close(&mut self, _: ConnId, _: &Termination) {
            let _ = self.closed.send(());
        }
    }

    /// A message pushed from another thread reaches the client through a
    /// wake: no task, no read on the connection. Repeated wakes before
    /// the loop looks are one; a wake for a connection that ended is
    /// ignored.
    #[test]
    fn a_wake_from_another_thread_serves_the_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mailbox = Mailbox::default();
        let wakes = Arc::new(Mutex::new(0));
        let (opened, open_rx) = mpsc::channel();
        let (closed, closed_rx) = mpsc::channel();
        let handler = Pushed {
            mailbox: mailbox.clone(),
            opened,
            closed,
            wakes: wakes.clone(),
        };
        let mut reactor =
            Reactor::new(listener, ServerConfig::default(), Gate::default(), handler).unwrap();
        let handle = reactor.handle();
        let thread = std::thread::spawn(move || reactor.run());

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut id_of_ended = ConnId::new(u32::MAX, 0);
        rt.block_on(async {
            let (mut ws, _) = crate::connect(&format!("ws://{addr}/"))
                .await
                .expect("connect");
            let id = tokio::task::spawn_blocking(move || {
                open_rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("opened")
            })
            .await
            .unwrap();
            let waker = handle.waker(id);
            for round in 0..3 {
                // Pushed and woken from another thread, twice each time.
                let (mailbox, waker) = (mailbox.clone(), waker.clone());
                std::thread::spawn(move || {
                    mailbox.lock().unwrap().push_back(format!("news {round}"));
                    waker.wake_by_ref();
                    waker.wake();
                })
                .join()
                .unwrap();
                let got = tokio::time::timeout(Duration::from_secs(10), ws.recv())
                    .await
                    .expect("delivered within 10 s")
                    .expect("open")
                    .expect("a message");
                assert_eq!(got, Message::text(format!("news {round}")));
            }
            assert!(*wakes.lock().unwrap() >= 3);
            id_of_ended = id;
            ws.close(crate::CloseCode::NORMAL, "").await.unwrap();
            while let Some(Ok(_)) = ws.recv().await {}
        });
        // The connection is gone: waking it does nothing.
        closed_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the connection ended");
        let before = *wakes.lock().unwrap();
        handle.waker(id_of_ended).wake();
        handle.shutdown();
        thread.join().unwrap().unwrap();
        assert_eq!(
            *wakes.lock().unwrap(),
            before,
            "no call for an ended connection"
        );
    }
}
