//! The accept loop: HTTP/1.1 connections with every timeout a public listener needs.
//!
//! `axum::serve` has no header-read, idle or write timeout and no connection limit, so
//! a few hundred silent sockets (or one that trickles a header byte every two seconds)
//! exhaust file descriptors, a reader that stops reading holds a streamed answer (and
//! its upstream request) forever, and a half-sent header blocks graceful shutdown.
//! Here each connection is served by hyper under a watchdog:
//!
//! * **header read** (`limits.header_read_timeout`, 10 s): a new connection, or one on
//!   which the first byte of a next request has arrived, must deliver a whole request
//!   head within this time, however slowly it trickles;
//! * **idle keep-alive** (`limits.keep_alive_timeout`, 60 s): a connection with no
//!   request in flight and no byte of a next one is closed after this long;
//! * **stalled write** (`limits.write_stall_timeout`, 30 s): a write that makes no
//!   progress for this long fails the connection (the response body, and the upstream
//!   request behind a streamed answer, are dropped);
//! * **connection limit** (`limits.max_connections`): past it, new sockets are closed
//!   at once instead of queueing until everyone times out;
//! * **drain deadline** (`limits.shutdown_drain_timeout`, 30 s): on SIGTERM, stop
//!   accepting, let requests in flight finish, then close whatever is left.

use axum::Router;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The connection limits, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub write_stall_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_drain_timeout: Duration,
}

impl ConnectionLimits {
    pub fn from_config(limits: &crate::config::LimitsConfig) -> Self {
        Self {
            header_read_timeout: limits.header_read_timeout,
            keep_alive_timeout: limits.keep_alive_timeout,
            write_stall_timeout: limits.write_stall_timeout,
            max_connections: limits.max_connections,
            shutdown_drain_timeout: limits.shutdown_drain_timeout,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refused_logged = Instant::now() - Duration::from_secs(60);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Full: close at once, so the client learns now, not at its timeout.
                    if refused_logged.elapsed() > Duration::from_secs(10) {
                        refused_logged = Instant::now();
                        tracing::warn!(max = limits.max_connections, "connection limit reached; refusing new connections");
                    }
                    drop(stream);
                    continue;
                };
                let router = router.clone();
                let stop = stop_rx.clone();
                connections.spawn(async move {
                    serve_connection(stream, peer, router, limits, stop).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    if open > 0 {
        tracing::info!(connections = open, "draining connections");
    }
    let drained = tokio::time::timeout(limits.shutdown_drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            "drain deadline passed; closing the remaining connections"
        );
        connections.shutdown().await;
    }
}

/// What the watchdog knows of one connection. Times are milliseconds since `epoch`.
struct Activity {
    epoch: Instant,
    /// When the current request head started (0: none being read).
    head_since: AtomicU64,
    /// When the connection last became idle (no request in flight).
    idle_since: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            // A new connection owes a request head from the start.
            head_since: AtomicU64::new(1),
            idle_since: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        // +1 so that 0 can mean "not set".
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_since.compare_exchange(
                0,
                self.now(),
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
    }

    fn request_finished(&self) {
        self.idle_since.store(self.now(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let now = self.now();
        let head = self.head_since.load(Ordering::Acquire);
        if head != 0 && now.saturating_sub(head) > limits.header_read_timeout.as_millis() as u64 {
            return Some("header read timeout");
        }
        if self.in_flight.load(Ordering::Acquire) == 0 && head == 0 {
            let idle = self.idle_since.load(Ordering::Acquire);
            if now.saturating_sub(idle) > limits.keep_alive_timeout.as_millis() as u64 {
                return Some("idle timeout");
            }
        }
        None
    }
}

/// Decrements the in-flight count when the response body is gone (sent or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm
    // and delayed ACKs add ~40 ms per event.
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(GuardedIo {
        inner: stream,
        activity: activity.clone(),
        stall: limits.write_stall_timeout,
        write_deadline: None,
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            activity.request_started();
            let guard = InFlight(activity.clone());
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let resp = router.oneshot(req.map(axum::body::Body::new)).await?;
                // The request counts as in flight until its body is sent or dropped.
                Ok::<_, std::convert::Infallible>(resp.map(move |body| {
                    axum::body::Body::new(body.map_frame(move |frame| {
                        let _ = &guard;
                        frame
                    }))
                }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // The watchdog enforces the header timeout as described above; hyper's own
        // (which also runs while idle) is the keep-alive backstop.
        .header_read_timeout(limits.keep_alive_timeout + limits.header_read_timeout)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (limits.header_read_timeout.min(limits.keep_alive_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = *stop.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = interval.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(%peer, why, "closing connection");
                    return;
                }
            }
            changed = stop.changed(), if !draining => {
                if changed.is_err() || *stop.borrow() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                    // A connection that owes a head has nothing in flight: close it now.
                    if activity.in_flight.load(Ordering::Acquire) == 0 {
                        return;
                    }
                }
            }
        }
    }
}

/// The socket, seen by hyper: reads start the header clock; a write that makes no
/// progress for `stall` fails with `TimedOut`.
struct GuardedIo {
    inner: TcpStream,
    activity: Arc<Activity>,
    stall: Duration,
    write_deadline: Option<Pin<Box<Sleep>>>,
}

impl GuardedIo {
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match result {
            Poll::Pending => {
                let stall = self.stall;
                let deadline = self
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )));
                }
                Poll::Pending
            }
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        result
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
