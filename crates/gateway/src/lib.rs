//! Gatehouse's gateway: the data plane. It serves the configured APIs from a routing table
//! compiled from the store's configuration, checks subscription keys as APIM does, forwards to
//! backends, and swaps in a new table on every revision without dropping a request.
//!
//! Invariants: a request uses the table it started with; the table is always compiled from
//! one consistent revision; secrets (keys) never reach logs or metrics. This crate knows the
//! store and the model, never the management API.

#![warn(unreachable_pub)]

mod body;
mod config;
mod context;
mod counters;
mod deadline;
mod graphql;
mod h1;
mod h1_server;
mod headers;
mod mirror;
mod policies;
mod proxy;
mod reload;
mod request;
mod server;
mod shared;
mod soap;
mod table;
mod telemetry;
mod template;
mod websocket;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
pub use config::{GatewayConfig, IMDS_ENDPOINT, IdentitySource};
use gatehouse_store::Store;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
pub use shared::Shared;
use shared::stopped;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use telemetry::{AccessLog, Stats, Traffic};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running gateway.
pub struct Gateway {
    pub local_addr: SocketAddr,
    pub shared: Arc<Shared>,
    store: Arc<Store>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The gateway's TLS: the certificate from PEM files, reloaded when they change (checked every
/// second until the gateway stops).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    stop: watch::Receiver<bool>,
) -> Result<tokio_rustls::TlsAcceptor> {
    let files = gatehouse_listen::tls::PemFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    };
    let tls = gatehouse_listen::tls::Reloading::load(files, "gateway")?;
    let acceptor = tls.acceptor(&[b"h2", b"http/1.1"])?;
    tls.watch(Duration::from_secs(1), stop);
    Ok(acceptor)
}

impl Gateway {
    /// Loads the configuration, starts following the store, and serves on `listener`.
    pub async fn start(
        store: Arc<Store>,
        listener: TcpListener,
        config: GatewayConfig,
    ) -> Result<Gateway> {
        let (stop, stop_rx) = watch::channel(false);
        let acceptor = match &config.tls {
            Some((cert, key)) => Some(tls_acceptor(cert, key, stop_rx.clone())?),
            None => None,
        };
        let s = store.clone();
        let serves = config.serves_gateway.clone();
        let mirror = tokio::task::spawn_blocking(move || reload::load(&s, serves.as_deref()))
            .await?
            .context("cannot load the configuration")?;
        let (mirror, first) = mirror;
        let websocket_apis = first.has_websocket_apis();
        let table = Arc::new(ArcSwap::from_pointee(first));
        let shared_counts = config
            .counters
            .as_ref()
            .map(|_| Arc::new(counters::SharedCounts::default()));
        let shared = Arc::new(Shared {
            table: table.clone(),
            websocket_apis: websocket_apis.into(),
            backend: proxy::Backend::new(
                config.backend_connect_timeout,
                config.backend_response_timeout,
                config.backend_ca.as_deref(),
            )?,
            access_log: AccessLog::open(config.access_log.as_deref())
                .context("cannot open the access log")?,
            stats: Stats::default(),
            traffic: Traffic::default(),
            counters: match &shared_counts {
                Some(s) => policies::Counters::shared_with(s.clone()),
                None => Default::default(),
            },
            jwks: Arc::new(policies::JwksCache::with_authority(
                config.entra_authority.clone(),
            )),
            identity: policies::Identity::new(config.identity.clone()),
            custom_metrics: Default::default(),
            log_sinks: Default::default(),
            backend_health: Default::default(),
            cache: Default::default(),
            concurrency: Default::default(),
            outbound: reqwest::Client::builder()
                .timeout(Duration::from_secs(240))
                .build()
                .context("cannot build the send-request client")?,
            store: store.clone(),
            request_ids: shared::RequestIds::new(),
            refusal: Default::default(),
            portal_route: config
                .portal
                .as_deref()
                .map(|url| Arc::new(table::portal_route(url))),
            config,
        });
        shared.stats.set_revision(mirror.revision);
        shared
            .jwks
            .ensure(&shared.table.load().policies.openid_urls);
        let local_addr = listener.local_addr()?;
        let mut tasks = vec![
            tokio::spawn(accept_loop(
                listener,
                shared.clone(),
                acceptor,
                stop_rx.clone(),
            )),
            tokio::spawn(reload::follow(
                store.clone(),
                mirror,
                shared.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(flush_usage(store.clone(), shared.clone(), stop_rx.clone())),
        ];
        if let (Some(counts), Some(url)) = (shared_counts, shared.config.counters.clone()) {
            tasks.push(tokio::spawn(counts.sync_forever(url, stop_rx)));
        }
        Ok(Gateway {
            local_addr,
            shared,
            store,
            stop,
            tasks,
        })
    }

    /// A handle that stops the gateway (draining requests in flight) when sent `true`, for
    /// whoever must stop it without owning it.
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// The revision of the configuration being served.
    pub fn revision(&self) -> u64 {
        self.shared.table.load().revision
    }

    /// Stops accepting, drains requests in flight (up to the drain timeout), flushes usage.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        // The accept loop (first task) returns once requests in flight have drained.
        for t in self.tasks {
            let _ = t.await;
        }
        flush_once(&self.store, &self.shared).await;
    }
}

/// Accepts connections and hands each to a worker thread, round-robin; on stop, waits until
/// every worker has drained its requests in flight.
///
/// Why worker threads with their own single-threaded runtimes rather than one multi-threaded
/// runtime: a connection's request, its backend exchange and its response then run on one thread
/// without cross-thread wake-ups or work-stealing bookkeeping (measured: about 1 µs per request
/// on the two-core benchmark machine), as nginx's worker processes do.
async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let count = match shared.config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut workers = Vec::with_capacity(count);
    for index in 0..count {
        match Worker::start(index, shared.clone(), acceptor.clone()) {
            Ok(w) => workers.push(w),
            Err(e) => tracing::error!(error = %e, "cannot start gateway worker {index}"),
        }
    }
    if workers.is_empty() {
        tracing::error!("no gateway worker could start; the gateway does not serve");
        return;
    }
    let slots = gatehouse_listen::ConnectionSlots::new(shared.config.max_connections);
    let mut next = 0usize;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let Some(slot) = slots.try_take() else {
            tracing::warn!(%remote, max = slots.max(), "gateway: connection refused, the gateway serves its maximum of connections");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // Out of this runtime's reactor; the worker registers it with its own.
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        next = (next + 1) % workers.len();
        if let Err(lost) = workers[next].connections.send((stream, remote, slot)) {
            tracing::error!("gateway worker {next} has stopped");
            drop(lost);
        }
    }
    drop(listener);
    let done: Vec<_> = workers
        .into_iter()
        .map(|w| {
            drop(w.connections);
            w.done
        })
        .collect();
    for d in done {
        let _ = d.await;
    }
}

/// An accepted connection, with the slot it takes until it ends.
type Accepted = (std::net::TcpStream, SocketAddr, gatehouse_listen::Slot);

/// A thread with a single-threaded runtime serving the connections it is handed.
struct Worker {
    connections: tokio::sync::mpsc::UnboundedSender<Accepted>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Worker {
    fn start(
        index: usize,
        shared: Arc<Shared>,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> Result<Worker> {
        let (connections, incoming) = tokio::sync::mpsc::unbounded_channel();
        let (finished, done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot build a gateway worker runtime")?;
        std::thread::Builder::new()
            .name(format!("gateway-{index}"))
            .spawn(move || {
                runtime.block_on(serve_connections(incoming, shared, acceptor));
                // Tasks still running (backend connections kept for reuse) end with the runtime.
                drop(runtime);
                let _ = finished.send(());
            })
            .context("cannot start a gateway worker thread")?;
        Ok(Worker { connections, done })
    }
}

/// One worker's loop: serves each connection handed over until the acceptor stops, then
/// drains requests in flight (up to the drain timeout).
///
/// HTTP/1.x connections are served by [`h1_server`]; HTTP/2 ones (h2c by prior knowledge on
/// a plain listener, `h2` by ALPN over TLS) by hyper.
async fn serve_connections(
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Accepted>,
    shared: Arc<Shared>,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
) {
    // Connections end when they see `stop` (HTTP/2 ones through hyper's graceful shutdown);
    // each holds a receiver, so all are gone once they have ended.
    let (stop, stop_rx) = watch::channel(false);
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(shared.config.max_header_bytes as u32);
    let h2 = Arc::new(builder);
    while let Some((stream, remote, slot)) = incoming.recv().await {
        let Ok(mut stream) = tokio::net::TcpStream::from_std(stream) else {
            continue;
        };
        let shared = shared.clone();
        let h2 = h2.clone();
        let stop = stop_rx.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // From the connection's start: the sniff or the TLS handshake, then the first head.
            let deadline = tokio::time::Instant::now() + shared.config.header_read_timeout;
            match acceptor {
                None => {
                    let Some((http2, first)) = h1_server::sniff(&mut stream, deadline).await else {
                        return;
                    };
                    if http2 {
                        let io = h1_server::Rewind::new(first.freeze(), stream);
                        let draining = shared.traffic.watch_draining();
                        let conn = h2.serve_connection(
                            TokioIo::new(io),
                            hyper_service(shared, remote, false),
                        );
                        serve_h2(conn, stop, draining).await;
                    } else {
                        let (read, write) = stream.into_split();
                        h1_server::serve(
                            Box::new(read),
                            first,
                            write,
                            shared,
                            remote,
                            false,
                            stop,
                            deadline,
                        )
                        .await;
                    }
                }
                Some(acceptor) => {
                    // A slow handshake holds only its own task.
                    let Ok(Ok(tls)) =
                        tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                        let draining = shared.traffic.watch_draining();
                        let conn = h2.serve_connection(
                            TokioIo::new(tls),
                            hyper_service(shared, remote, true),
                        );
                        serve_h2(conn, stop, draining).await;
                    } else {
                        let (read, write) = tokio::io::split(tls);
                        h1_server::serve(
                            Box::new(read),
                            bytes::BytesMut::new(),
                            write,
                            shared,
                            remote,
                            true,
                            stop,
                            deadline,
                        )
                        .await;
                    }
                }
            }
        });
    }
    let drain = shared.config.drain_timeout;
    let _ = stop.send(true);
    drop(stop_rx);
    // Every connection's task holds a receiver of `stop`.
    let drained = stop.closed();
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!("requests still in flight after {drain:?}; closing them");
    }
}

/// Serves an HTTP/2 connection to its end. On shutdown, or when the gateway starts draining, it
/// sends GOAWAY: requests in flight finish, and the client opens a new connection for the next
/// ones (after a move's DNS cutover, to the new instance).
async fn serve_h2<C: hyper_util::server::graceful::GracefulConnection>(
    conn: C,
    mut stop: watch::Receiver<bool>,
    mut draining: watch::Receiver<bool>,
) {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stopped(&mut stop) => {}
        _ = draining.wait_for(|on| *on) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// The pipeline as a hyper service, for HTTP/2 connections.
fn hyper_service(
    shared: Arc<Shared>,
    remote: SocketAddr,
    tls: bool,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = hyper::Response<crate::body::Body>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<hyper::Response<crate::body::Body>, std::convert::Infallible>>
             + Send,
> + Clone {
    let client = Arc::new(crate::context::ClientConnection::new(remote));
    hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let answered = server::handle(
            shared.clone(),
            request::ClientRequest::from_http(req.map(request::RequestBody::Hyper)),
            remote,
            tls,
            client.clone(),
        );
        async move { Ok(answered.await.into_response()) }
    })
}

/// Flushes usage aggregates to the store every few seconds and once at shutdown.
async fn flush_usage(store: Arc<Store>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stopped(&mut stop) => true,
        };
        flush_once(&store, &shared).await;
        if last {
            return;
        }
    }
}

async fn flush_once(store: &Arc<Store>, shared: &Shared) {
    let mut rows = shared.stats.drain_usage();
    if rows.is_empty() {
        return;
    }
    // The region the calls were served in: a self-hosted gateway's own, else the instance's.
    let region = match &shared.config.region {
        Some(r) => r.clone(),
        None => shared.table.load().region.clone(),
    };
    for row in &mut rows {
        row.region = region.clone();
    }
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.add_usage(&rows)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "usage data could not be saved"),
        Err(e) => tracing::warn!(error = %e, "usage flush failed"),
    }
}
