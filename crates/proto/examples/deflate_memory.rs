//! Measures the heap one server connection holds with permessage-deflate,
//! per setting, after it has received and sent one compressed message.
//!
//! `cargo run --release -p wsline-proto --example deflate_memory`
//! (the table in docs/compression.md comes from this).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use wsline_proto::{Config, Connection, DeflateConfig, DeflateParams, Event, Role};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn measure(bits: u8, mem_level: u8, no_context_takeover: bool) -> (isize, isize) {
    let now = Instant::now();
    let params = DeflateParams {
        server_max_window_bits: bits,
        client_max_window_bits: bits,
        server_no_context_takeover: no_context_takeover,
        client_no_context_takeover: no_context_takeover,
    };
    let mut config = DeflateConfig::server_default();
    config.mem_level = mem_level;
    let text = "{\"op\":\"message\",\"channel\":\"chat:lobby\",\"data\":\"hello\"} ".repeat(300);
    let mut client = Connection::new(Role::Client, Config::default(), now);
    client.enable_deflate(&params, &DeflateConfig::client_default());
    client.send_text(&text).unwrap();
    let wire = client.take_output();

    let before = live();
    let mut server = Connection::new(Role::Server, Config::default(), now);
    server.enable_deflate(&params, &config);
    let idle = live() - before;
    server.receive_data(&wire, now);
    while let Some(ev) = server.poll_event() {
        assert!(matches!(ev, Event::Message(_)));
    }
    server.send_text(&text).unwrap();
    drop(server.take_output());
    let active = live() - before;
    drop(server);
    (idle, active)
}

fn main() {
    println!("| window bits | mem level | no context takeover | idle (B) | after one message each way (KiB) |");
    println!("| --- | --- | --- | --- | --- |");
    for (bits, mem, no_ctx) in [
        (15, 8, false),
        (15, 8, true),
        (12, 5, false),
        (12, 5, true),
        (10, 4, false),
        (9, 1, false),
        (9, 1, true),
    ] {
        let (idle, active) = measure(bits, mem, no_ctx);
        println!(
            "| {bits} | {mem} | {no_ctx} | {idle} | {:.1} |",
            active as f64 / 1024.0
        );
    }
}
