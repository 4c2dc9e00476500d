//! Test guest: tries to use the network — a TCP connection to `127.0.0.1:4222` (where
//! a local nats-server listens), a name lookup, a UDP bind and send — and returns
//! what happened: `{"attempts": {"tcp connect 127.0.0.1:4222": {"ok": false,
//! "detail": "..."}, ...}, "succeeded": 0}`.
//!
//! Expected: completed, with every attempt failed (`"succeeded": 0`). Note that Rust's
//! `std::net` on wasm32-wasip2 makes this component import `wasi:sockets/*`: a worker
//! whose linker offers no sockets at all refuses it at deploy/instantiation time
//! instead, which is an equally good outcome. Anything that connects is an escape.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use jobbox_guest::{Context, Error};
use serde::Serialize;
use serde::de::IgnoredAny;

/// The outcome of one attempt.
#[derive(Serialize)]
struct Attempt {
    /// Whether the operation succeeded.
    ok: bool,
    /// The error, or a summary of what was obtained.
    detail: String,
}

impl<T: Debug> From<std::io::Result<T>> for Attempt {
    fn from(result: std::io::Result<T>) -> Self {
        match result {
            Ok(value) => Self {
                ok: true,
                detail: format!("{value:?}").chars().take(200).collect(),
            },
            Err(e) => Self {
                ok: false,
                detail: e.to_string(),
            },
        }
    }
}

/// The output.
#[derive(Serialize)]
struct Report {
    /// Each attempt by name.
    attempts: BTreeMap<&'static str, Attempt>,
    /// How many attempts succeeded.
    succeeded: usize,
}

fn net_escape(_input: IgnoredAny, _ctx: &Context) -> Result<Report, Error> {
    let nats = ([127, 0, 0, 1], 4222).into();
    let mut attempts = BTreeMap::new();
    attempts.insert(
        "tcp connect 127.0.0.1:4222",
        TcpStream::connect_timeout(&nats, Duration::from_secs(1))
            .map(|s| s.peer_addr().ok())
            .into(),
    );
    attempts.insert(
        "lookup localhost:4222",
        "localhost:4222"
            .to_socket_addrs()
            .map(Iterator::collect::<Vec<_>>)
            .into(),
    );
    let udp = UdpSocket::bind("0.0.0.0:0");
    let send = match &udp {
        Ok(socket) => socket.send_to(b"escaped", "127.0.0.1:4222"),
        Err(e) => Err(std::io::Error::new(e.kind(), format!("no socket: {e}"))),
    };
    attempts.insert(
        "udp bind 0.0.0.0:0",
        udp.map(|s| s.local_addr().ok()).into(),
    );
    attempts.insert("udp send to 127.0.0.1:4222", send.into());
    let succeeded = attempts.values().filter(|a: &&Attempt| a.ok).count();
    Ok(Report {
        attempts,
        succeeded,
    })
}

jobbox_guest::export_handler!(net_escape);
