//! The metrics endpoint: a blocking HTTP/1.1 loop on its own thread that answers `GET /metrics`
//! (and `/`) with the Prometheus text of every shard. Runs on: the metrics thread. Invariants:
//! a request head is read with a 2 s timeout and at most 8 KiB; one scrape at a time (scrapes
//! are rare and cheap); the thread stops with the broker.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::Registry;

const REQUEST_HEAD_BYTES_MAX: usize = 8 * 1024;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves `registry` on `listener` until `stop` is set.
pub fn serve(listener: TcpListener, registry: Registry, stop: Arc<AtomicBool>) {
    // Non-blocking accept polled every 100 ms, so the thread notices `stop`.
    if listener.set_nonblocking(true).is_err() {
        tracing::warn!("metrics listener cannot be made non-blocking; metrics are off");
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => answer(stream, &registry),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                std::thread::sleep(Duration::from_millis(100))
            }
        }
    }
}

fn answer(mut stream: TcpStream, registry: &Registry) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < REQUEST_HEAD_BYTES_MAX {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body) = match (method, path) {
        ("GET", "/metrics") | ("GET", "/") => ("200 OK", registry.render()),
        ("GET", _) => ("404 Not Found", "not found: try /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "only GET\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}
