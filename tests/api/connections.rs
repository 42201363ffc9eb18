//! Connection exhaustion (hardening item 3), as the attacks: hundreds of silent sockets,
//! a header trickled a byte at a time, a keep-alive connection left open, a reader that
//! stops reading a streamed answer, and a shutdown with a half-sent header pending.

use crate::support::*;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection; returns when it did (from `since`).
async fn closed_after(mut sock: TcpStream, since: Instant, limit: Duration) -> Option<Duration> {
    let mut buf = [0u8; 4096];
    let deadline = since + limit;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, sock.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

// Multi-threaded: each socket's watcher runs from the moment it connects, so a close
// is timed when it happens, not when a busy test gets round to looking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_closed_and_do_not_starve_others() {
    // Header deadline 1 s, idle deadline 10 s: a close before 5 s is the header's.
    let s = Server::start_with(&[
        ("PALISADE_LIMITS__HEADER_READ_TIMEOUT", "1s"),
        ("PALISADE_LIMITS__KEEP_ALIVE_TIMEOUT", "10s"),
    ]);
    let a = addr(&s);
    let mut silent = Vec::new();
    for _ in 0..300 {
        let sock = TcpStream::connect(&a).await.unwrap();
        silent.push(tokio::spawn(closed_after(
            sock,
            Instant::now(),
            Duration::from_secs(15),
        )));
    }
    // One client trickles a header byte every 300 ms: never done, always "active".
    let trickler = {
        let a = a.clone();
        tokio::spawn(async move {
            let mut sock = TcpStream::connect(&a).await.unwrap();
            let t0 = Instant::now();
            for b in b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
                if sock.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            closed_after(sock, t0, Duration::from_secs(30)).await
        })
    };

    // Meanwhile a real request is served at once.
    let t = Instant::now();
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // Every silent socket is closed at the header deadline, not the idle one.
    let mut closes = Vec::new();
    for w in silent {
        closes.push(
            w.await
                .unwrap()
                .expect("a silent connection was never closed"),
        );
    }
    closes.sort();
    let (first, last) = (closes[0], closes[closes.len() - 1]);
    assert!(
        first >= Duration::from_millis(900) && last < Duration::from_secs(5),
        "closed after {first:?} .. {last:?}"
    );
    // 50 bytes at 300 ms would take 15 s; the header deadline ends it long before.
    let trickled = trickler
        .await
        .unwrap()
        .expect("the trickler was never closed");
    assert!(
        trickled < Duration::from_secs(5),
        "a trickled header held its connection for {trickled:?}"
    );
}

#[tokio::test]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let s = Server::start_with(&[
        ("PALISADE_LIMITS__HEADER_READ_TIMEOUT", "1s"),
        ("PALISADE_LIMITS__KEEP_ALIVE_TIMEOUT", "3s"),
    ]);
    let mut sock = TcpStream::connect(addr(&s)).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let answered = Instant::now();
    // Kept open past the header timeout (an idle keep-alive is not a slow header)...
    let closed = closed_after(sock, answered, Duration::from_secs(10))
        .await
        .expect("an idle keep-alive connection was never closed");
    assert!(
        closed >= Duration::from_millis(2500) && closed < Duration::from_millis(5000),
        "closed after {closed:?}"
    );
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_at_once_and_capacity_returns() {
    let s = Server::start_with(&[
        ("PALISADE_LIMITS__MAX_CONNECTIONS", "20"),
        ("PALISADE_LIMITS__HEADER_READ_TIMEOUT", "2s"),
    ]);
    let a = addr(&s);
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(&a).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The 21st is closed at once rather than left to time out.
    let extra = TcpStream::connect(&a).await.unwrap();
    let t = Instant::now();
    let closed = closed_after(extra, t, Duration::from_secs(1)).await;
    assert!(closed.is_some(), "a connection over the limit was kept");
    // Once the holders are gone, service is back.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_reader_that_stops_reading_a_stream_is_cut() {
    let (s, mock) = start_process_with_mock(&[
        ("PALISADE_LIMITS__WRITE_STALL_TIMEOUT", "1s"),
        ("PALISADE_LLM__READ_TIMEOUT", "30s"),
    ])
    .await;
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    // An answer far larger than the client's socket buffer, sent as fast as it can go.
    mock.set_fixed_answer(4_000_000);
    mock.set_chunk_delay(0);
    mock.state.chunk_chars.store(16_384, Ordering::SeqCst);

    let body = json!({"stream": true,
        "messages": [{"role": "user", "content": "the whole policy"}]})
    .to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut sock = socket.connect(addr(&s).parse().unwrap()).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        alice.access,
        body.len(),
        body
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = sock.read(&mut head).await.unwrap();
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    // ...and now it stops reading, for longer than the stall timeout.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Reading on, it gets what was already in flight and then the end: the server gave
    // up on it. (A server that waited would now deliver the whole answer and `[DONE]`.)
    let mut rest = Vec::new();
    let mut buf = vec![0u8; 65536];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(drained.is_ok(), "the connection was still open");
    let text = String::from_utf8_lossy(&rest);
    assert!(
        !text.contains("[DONE]"),
        "the stalled stream was served to the end"
    );
    assert!(rest.len() < 4_000_000, "got {} bytes", rest.len());
    // The server is fine afterwards.
    let resp = s.http.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_completes_with_a_half_sent_header_and_a_stream_in_flight() {
    let (mut s, mock) = start_process_with_mock(&[
        ("PALISADE_LIMITS__SHUTDOWN_DRAIN_TIMEOUT", "2s"),
        ("PALISADE_LLM__READ_TIMEOUT", "30s"),
    ])
    .await;
    let acme = seed_acme(&s);
    let alice = s.login("alice", &acme.alice).await;
    // A stream that would take ~40 s: 2,000 chunks, 20 ms apart.
    mock.set_fixed_answer(32_000);
    mock.set_chunk_delay(20);

    let mut half = TcpStream::connect(addr(&s)).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let stream = s
        .post_auth(
            "/v1/chat/completions",
            &alice.access,
            &json!({"stream": true,
                "messages": [{"role": "user", "content": "go"}]}),
        )
        .await;
    assert_eq!(stream.status(), StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let t = Instant::now();
    let half_closed = tokio::spawn(closed_after(half, t, Duration::from_secs(10)));
    let status = tokio::task::spawn_blocking(move || {
        let st = s.terminate();
        (st, s)
    });
    let (st, _s) = tokio::time::timeout(Duration::from_secs(10), status)
        .await
        .expect("shutdown hung")
        .unwrap();
    let took = t.elapsed();
    assert!(st.success(), "{st:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "the in-flight stream had its drain time, no more: {took:?}"
    );
    // The half-sent header was closed at once, not waited on like the stream.
    let closed = half_closed.await.unwrap().expect("never closed");
    assert!(
        closed < Duration::from_millis(1000),
        "closed after {closed:?}"
    );
    drop(stream);
}

/// The separate metrics address is served by the same hardened accept loop: a client
/// that never finishes its request head is cut off at the header deadline there too.
#[tokio::test]
async fn the_metrics_address_closes_silent_and_trickling_connections() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let _s = Server::start_with(&[
        ("PALISADE_METRICS__LISTEN", metrics.as_str()),
        ("PALISADE_LIMITS__HEADER_READ_TIMEOUT", "1s"),
        ("PALISADE_LIMITS__KEEP_ALIVE_TIMEOUT", "10s"),
    ]);
    // Served: a scrape works.
    let mut ok = TcpStream::connect(&metrics).await.unwrap();
    ok.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = ok.read(&mut buf).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // A silent connection and a half-sent head are closed at the 1 s header deadline
    // (the idle deadline is 10 s), where a plain server would hold them for ever.
    let silent = TcpStream::connect(&metrics).await.unwrap();
    let mut half = TcpStream::connect(&metrics).await.unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let t0 = Instant::now();
    for (name, sock) in [("silent", silent), ("half-sent", half)] {
        let closed = closed_after(sock, t0, Duration::from_secs(8))
            .await
            .unwrap_or_else(|| panic!("the {name} connection was never closed"));
        assert!(
            closed < Duration::from_secs(5),
            "{name}: closed after {closed:?}"
        );
    }
}
