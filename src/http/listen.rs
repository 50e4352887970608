//! The accept loop both HTTP listeners (app-server and broker) share: every
//! connection must send its headers within a deadline, and a port serves a
//! bounded number of connections at once, with a few spare ones kept for the
//! health probes so a flood cannot make a stack look dead to its supervisor.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode, header};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::timeout::TimeoutBody;

use crate::wire::http::{AUTH_TOKEN_HEADER, DevError};

/// Connections beyond `max_connections` that are still accepted, to answer
/// `/healthz` and `/readyz` (anything else gets 503); more are closed at once.
pub const PROBE_HEADROOM: usize = 32;

/// The most a request's line and headers may take (hyper answers 431
/// beyond it), and a connection's read buffer (hyper's default: ~400 KiB).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Paths a connection over the cap may still use.
const PROBES: &[&str] = &["/healthz", "/readyz"];

/// How a listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// How long a client may stall: sending headers or the next bytes of a
    /// body, or taking the next bytes of an answer; also the idle
    /// keep-alive limit. (An upgraded WebSocket is the broker's business.)
    pub http_timeout: Duration,
    /// HTTP connections served at once (a WebSocket stops counting once
    /// upgraded: the broker bounds those).
    pub max_connections: usize,
    /// After shutdown, how long requests in flight may take to finish; then
    /// their connections are dropped (a trickling upload, a client that
    /// does not read its download).
    pub drain: Duration,
}

/// File descriptors kept for everything but HTTP connections (the database,
/// WebSockets, logs) when `--max-connections` has to fit the process limit.
const OTHER_FILES: u64 = 128;

/// `max` connections per port, lowered so that both ports' connections and
/// their probe headroom fit in `files` open files (0: unknown). A cap above
/// the limit would let a flood take the descriptors the probes need.
pub fn fit_connections(max: usize, files: u64) -> usize {
    if files == 0 {
        return max;
    }
    let room = (files.saturating_sub(OTHER_FILES) / 2) as usize;
    max.min(room.saturating_sub(PROBE_HEADROOM)).max(1)
}

/// `--max-websockets` fitted to what the open-file limit `files` leaves
/// beside both listeners' `http` connections and their probe headroom.
pub fn fit_websockets(max: usize, files: u64, http: usize) -> usize {
    if files == 0 {
        return max;
    }
    let taken = OTHER_FILES as usize + 2 * (http + PROBE_HEADROOM);
    max.min((files as usize).saturating_sub(taken)).max(1)
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests
/// in flight (long polls included) finish within `limits.drain`. Handlers
/// find the client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let spare = Arc::new(Semaphore::new(PROBE_HEADROOM));
    let stop = CancellationToken::new();
    let mut conns = JoinSet::new();
    let refused = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connections, so the set holds live ones only.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, mostly: wait for some to close.
                    if every_1000th(&refused) {
                        tracing::warn!(error = %e, "cannot accept a connection");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (permit, probes_only) = match slots.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match spare.clone().try_acquire_owned() {
                Ok(p) => (p, true),
                Err(_) => {
                    if every_1000th(&refused) {
                        tracing::warn!(
                            max = limits.max_connections,
                            "too many connections (--max-connections); closing new ones"
                        );
                    }
                    continue;
                }
            },
        };
        // Replies and pushes are small and already batched per flush; Nagle's
        // algorithm would hold them back until the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        conns.spawn(connection(
            tcp,
            addr,
            app.clone(),
            limits,
            probes_only,
            stop.clone(),
            permit,
        ));
    }
    drop(listener);
    stop.cancel();
    let drained = tokio::time::timeout(limits.drain, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = conns.len(),
            "requests still running after the shutdown timeout; dropping their connections"
        );
        conns.shutdown().await;
    }
    Ok(())
}

/// Serves one connection until it closes, or until `stop` and its last
/// request. `permit` holds its place under the cap.
async fn connection(
    tcp: TcpStream,
    addr: SocketAddr,
    app: Router,
    limits: ConnLimits,
    probes_only: bool,
    stop: CancellationToken,
    permit: OwnedSemaphorePermit,
) {
    let _permit = permit;
    let timeout = limits.http_timeout;
    let upgraded = Arc::new(AtomicBool::new(false));
    let auth_header = Arc::new(AtomicBool::new(false));
    let io = WriteDeadline::new(tcp, timeout, upgraded.clone(), auth_header.clone());
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req = req.map(|body| TimeoutBody::new(timeout, body));
        req.extensions_mut().insert(ConnectInfo(addr));
        let (app, upgraded, auth_header) = (app.clone(), upgraded.clone(), auth_header.clone());
        async move {
            // Over the cap: the probes, and the way to clear injected
            // faults (hung requests may be what fills the cap).
            if probes_only
                && !PROBES.contains(&req.uri().path())
                && !req.uri().path().starts_with("/_dev/faults")
            {
                return Ok::<_, CutError>(over_capacity(limits.max_connections));
            }
            let response = app.oneshot(req).await?;
            if response.extensions().get::<Cut>().is_some() {
                // An error ends the connection before hyper writes anything.
                return Err(CutError);
            }
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                upgraded.store(true, Ordering::Release);
            }
            if response.headers().contains_key(AUTH_TOKEN_HEADER) {
                auth_header.store(true, Ordering::Release);
            }
            Ok(response)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .max_header_size(MAX_HEADER_BYTES)
        .max_buf_size(MAX_HEADER_BYTES)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, client = %addr, "connection ended with an error");
    }
}

/// Marks a response whose connection must be closed with no answer at all
/// (an injected `api.cut`, as a proxy dropping the connection would).
#[derive(Clone, Copy, Debug)]
pub struct Cut;

/// The service's error for [`Cut`].
#[derive(Debug, thiserror::Error)]
#[error("connection cut on purpose (an injected fault)")]
pub struct CutError;

impl From<std::convert::Infallible> for CutError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// A connection whose writes must make progress: one that stays pending
/// for `limit` fails, so a client that stopped reading its answer is
/// dropped instead of holding the connection. Off once upgraded.
struct WriteDeadline {
    tcp: TcpStream,
    limit: Duration,
    upgraded: Arc<AtomicBool>,
    /// The response being written carries `authToken` (see `cased_head`).
    auth_header: Arc<AtomicBool>,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl WriteDeadline {
    fn new(
        tcp: TcpStream,
        limit: Duration,
        upgraded: Arc<AtomicBool>,
        auth_header: Arc<AtomicBool>,
    ) -> Self {
        Self {
            tcp,
            limit,
            upgraded,
            auth_header,
            stalled: None,
        }
    }

    /// `buf` with the `authToken` header name cased, when `buf` is the head
    /// of a response that carries it; each such head is looked at once.
    fn cased(&self, buf: &[u8]) -> Option<Vec<u8>> {
        if !buf.starts_with(b"HTTP/1.") || !self.auth_header.swap(false, Ordering::AcqRel) {
            return None;
        }
        cased_head(buf)
    }

    /// After a write made progress (`Ready`) the clock stops; while it is
    /// pending the clock runs, and running out fails the write.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() || self.upgraded.load(Ordering::Acquire) {
            self.stalled = None;
            return poll;
        }
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading (--http-timeout)",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let cased = self.cased(buf);
        let poll = Pin::new(&mut self.tcp).poll_write(cx, cased.as_deref().unwrap_or(buf));
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // A response head goes first, alone if it needs its case fixed.
        let head = bufs.iter().find(|b| !b.is_empty());
        let poll = match head.and_then(|h| self.cased(h)) {
            Some(cased) => Pin::new(&mut self.tcp).poll_write(cx, &cased),
            None => Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs),
        };
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.tcp).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// hyper writes header names in lower case and offers no way to choose
/// another; iOS clients look `authToken` up case-sensitively. So the head of
/// a response carrying it is rewritten as it is written: same length, head
/// only, so nothing else moves. `None` when `buf` needs no change.
fn cased_head(buf: &[u8]) -> Option<Vec<u8>> {
    const LOWER: &[u8] = b"\r\nauthtoken: ";
    const CASED: &[u8] = b"\r\nauthToken: ";
    if !buf.starts_with(b"HTTP/1.") {
        return None;
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(buf.len(), |e| e + 2);
    let at = buf[..end].windows(LOWER.len()).position(|w| w == LOWER)?;
    let mut cased = buf.to_vec();
    cased[at..at + CASED.len()].copy_from_slice(CASED);
    Some(cased)
}

/// True for the 1st, 1001st, … call: a flood logs a line now and then.
fn every_1000th(count: &AtomicU64) -> bool {
    count.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000)
}

fn over_capacity(max: usize) -> axum::response::Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONNECTION, "close"), (header::RETRY_AFTER, "1")],
        axum::Json(DevError {
            error: format!(
                "this port already serves {max} connections (--max-connections); try again shortly"
            ),
        }),
    )
        .into_response()
}

/// The client's address, as `serve` recorded it (unspecified when a test
/// drives the router directly).
pub fn client_addr(extensions: &axum::http::Extensions) -> SocketAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_header_keeps_its_case_and_nothing_else_changes() {
        let head =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nauthtoken: abc\r\n\r\n{\"a\":1}";
        let cased = super::cased_head(head).unwrap();
        assert_eq!(cased.len(), head.len());
        assert_eq!(
            cased,
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nauthToken: abc\r\n\r\n{\"a\":1}"
        );
        // Only in a response head: a body or a later chunk is left alone.
        assert!(super::cased_head(b"HTTP/1.1 200 OK\r\n\r\n\r\nauthtoken: x").is_none());
        assert!(super::cased_head(b"{\"x\":\"\r\nauthtoken: \"}").is_none());
        assert!(super::cased_head(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
    }

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(fit_connections(1000, 0), 1000);
        assert_eq!(fit_connections(1000, 1 << 20), 1000);
        // 300 files: (300 - 128) / 2 = 86 per port, 32 of them headroom.
        assert_eq!(fit_connections(1000, 300), 54);
        assert_eq!(fit_connections(10, 300), 10);
        assert_eq!(fit_connections(1000, 100), 1);
        assert_eq!(fit_websockets(50_000, 0, 1000), 50_000);
        assert_eq!(fit_websockets(50_000, 1 << 20, 1000), 50_000);
        assert_eq!(fit_websockets(50_000, 4096, 1000), 4096 - 128 - 2064);
        assert_eq!(fit_websockets(50_000, 300, 54), 1);
    }
}
