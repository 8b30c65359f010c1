//! A webhook receiver over HTTP on 127.0.0.1 for the webhook tests (the
//! hub's memory-engine tests and the Redis cluster tests): reads each POST,
//! reports its signature header and raw body, answers with the status the
//! test sets for that request (by its number, from 0).

use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::within;

/// How the receiver answers a request.
#[derive(Clone, Copy, Debug)]
pub enum Answer {
    /// This status.
    Status(u16),
    /// Nothing, until the hub gives up and closes.
    Hang,
}

type Answers = dyn Fn(usize) -> Answer + Send + Sync;

/// One POST as received.
#[derive(Clone, Debug)]
pub struct Post {
    /// The `X-Wsline-Signature` header.
    pub signature: Option<String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// How it was answered.
    pub answered: u16,
}

impl Post {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The body's events.
    pub fn events(&self) -> Vec<Value> {
        self.json()["events"].as_array().expect("events").clone()
    }
}

/// The receiver.
pub struct Receiver {
    /// Its URL (`http://127.0.0.1:PORT/hooks`).
    pub url: String,
    posts: mpsc::UnboundedReceiver<Post>,
    answers: Arc<Mutex<Arc<Answers>>>,
}

impl Receiver {
    /// A receiver answering 200 to everything.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let answers: Arc<Mutex<Arc<Answers>>> =
            Arc::new(Mutex::new(Arc::new(|_| Answer::Status(200))));
        let (tx, posts) = mpsc::unbounded_channel();
        let shared = answers.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut tcp, _)) = listener.accept().await {
                let answer = (shared.lock().unwrap().clone())(n);
                n += 1;
                let tx = tx.clone();
                tokio::spawn(async move {
                    let Some((head, body)) = super::read_request(&mut tcp).await else {
                        return;
                    };
                    assert!(head.starts_with("POST /hooks "), "{head}");
                    let signature = head.lines().find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("x-wsline-signature")
                            .then(|| value.trim().to_owned())
                    });
                    let status = match answer {
                        Answer::Status(s) => s,
                        Answer::Hang => {
                            let _ = tcp.read(&mut [0u8; 1]).await;
                            return;
                        }
                    };
                    // Reported before it is answered: once the hub has its
                    // answer, the test can see the POST.
                    let _ = tx.send(Post {
                        signature,
                        body,
                        answered: status,
                    });
                    let _ = tcp
                        .write_all(
                            format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                        )
                        .await;
                });
            }
        });
        Receiver {
            url,
            posts,
            answers,
        }
    }

    /// Answers request number `n` (from 0, in the order they connect)
    /// with `answers(n)` from now on.
    pub fn answer(&self, answers: impl Fn(usize) -> Answer + Send + Sync + 'static) {
        *self.answers.lock().unwrap() = Arc::new(answers);
    }

    /// The next POST answered.
    pub async fn post(&mut self) -> Post {
        within("a webhook POST", self.posts.recv())
            .await
            .expect("the receiver runs")
    }

    /// POSTs until `done` holds for the events received so far (in
    /// arrival order, repeats included); all of them.
    pub async fn until(&mut self, done: impl Fn(&[Value]) -> bool) -> (Vec<Post>, Vec<Value>) {
        let mut posts = Vec::new();
        let mut events = Vec::new();
        while !done(&events) {
            let post = self.post().await;
            if post.answered == 200 {
                events.extend(post.events());
            }
            posts.push(post);
        }
        (posts, events)
    }

    /// The events of the POSTs answered 200 so far, without waiting.
    pub fn events_now(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Ok(post) = self.posts.try_recv() {
            if post.answered == 200 {
                events.extend(post.events());
            }
        }
        events
    }

    /// Proves no POST is pending now (beyond those already read).
    pub fn no_more(&mut self) {
        if let Ok(p) = self.posts.try_recv() {
            panic!(
                "an unexpected webhook POST: {}",
                String::from_utf8_lossy(&p.body)
            );
        }
    }
}
