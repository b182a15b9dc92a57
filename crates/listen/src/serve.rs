//! Serving an axum router on a listener with [`Limits`] and optional TLS.

use crate::limits::{ConnectionSlots, Limits};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The smallest read buffer hyper allows; a smaller head limit is enforced as this.
const HYPER_MIN_BUFFER: usize = 8192;

/// The most header fields a request head may have (as the gateway: 431 beyond).
const MAX_FIELDS: usize = 100;

/// How long a stopping listener waits for requests in flight.
const DRAIN: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` (over TLS with `tls`) until `stop`, then waits for requests in
/// flight to finish (at most 30 s). `name` names the listener in log lines.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: &'static str,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let slots = ConnectionSlots::new(limits.max_connections);
    let builders = Arc::new(Builders::new(&limits));
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "{name}: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let Some(slot) = slots.try_take() else {
            tracing::warn!(%remote, max = slots.max(), "{name}: connection refused, the listener serves its maximum of connections");
            drop(stream);
            continue;
        };
        let (app, builders, tls, stop) = (app.clone(), builders.clone(), tls.clone(), stop.clone());
        tokio::spawn(async move {
            let _slot = slot;
            // Handlers that need the client's address (the portal's sign-in limiter) read it
            // as `ConnectInfo`.
            let app = app.layer(axum::Extension(axum::extract::ConnectInfo(remote)));
            serve_connection(stream, app, &builders, tls, limits, stop).await;
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, slots.all_returned())
        .await
        .is_err()
    {
        tracing::warn!("{name}: requests still in flight after {DRAIN:?} are dropped");
    }
    Ok(())
}

/// The HTTP/1.x and HTTP/2 connection settings of one listener.
struct Builders {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &Limits) -> Builders {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_header_size(limits.max_header_bytes)
            .max_headers(MAX_FIELDS)
            .max_buf_size(limits.max_header_bytes.max(HYPER_MIN_BUFFER));
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Builders { http1, http2 }
    }
}

async fn serve_connection(
    stream: TcpStream,
    app: Router,
    builders: &Builders,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let Some(acceptor) = tls else {
        let conn = builders
            .http1
            .serve_connection(TokioIo::new(stream), service);
        return until_stopped(conn, stop).await;
    };
    // The handshake counts toward the head's time: a client that stalls in it is cut.
    let Ok(Ok(stream)) =
        tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream)).await
    else {
        return;
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let conn = builders
            .http2
            .serve_connection(TokioIo::new(stream), service);
        until_stopped(conn, stop).await;
    } else {
        let conn = builders
            .http1
            .serve_connection(TokioIo::new(stream), service);
        until_stopped(conn, stop).await;
    }
}

/// A connection that can finish what it is doing and close.
trait Graceful: std::future::Future {
    fn begin_shutdown(self: std::pin::Pin<&mut Self>);
}

impl<I, S> Graceful for hyper::server::conn::http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S> Graceful for hyper::server::conn::http2::Connection<I, S, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Future: Send + 'static,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn begin_shutdown(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Serves one connection; on stop, it finishes the request in flight and closes.
async fn until_stopped<C: Graceful>(conn: C, mut stop: watch::Receiver<bool>) {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = stopped(&mut stop) => {
            conn.as_mut().begin_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves once `stop` says so (or its sender is gone), holding no borrow across awaits.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
