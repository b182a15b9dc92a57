//! WebSocket pass-through: an HTTP/1.1 upgrade to an API of type `websocket` is routed and its
//! subscription key checked like any request; the handshake then goes to the backend (`ws://`
//! or `http://` in plain, `wss://` or `https://` over TLS), and once the backend answers `101`
//! the two connections are joined: frames flow both ways as bytes until either side closes.
//!
//! Invariants: nothing reaches the backend before the handshake is routed and its key
//! checked; the subscription key's header is not passed on; a backend that refuses the
//! upgrade yields a 502 naming its status, and no tunnel; a tunnel holds no request state
//! (the gateway does not parse frames), so its cost is two copies.

use crate::context::{ClientConnection, GatewayError, json_error};
use crate::request::{ClientRequest, Reader, RequestBody, RequestHeaders};
use crate::server;
use crate::shared::Shared;
use crate::table::ApiKind;
use bytes::BytesMut;
use gatehouse_http1::RequestHead;
use hyper::StatusCode;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest handshake answer read from a backend.
const MAX_BACKEND_HEAD: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

fn has_token(head: &RequestHead, name: &str, token: &str) -> bool {
    head.headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case(name.as_bytes())
            && std::str::from_utf8(v)
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether `head` asks to upgrade to a WebSocket on an API of type `websocket`.
pub(crate) fn wants_tunnel(shared: &Shared, head: &RequestHead) -> bool {
    if !shared
        .websocket_apis
        .load(std::sync::atomic::Ordering::Relaxed)
        || head.method != hyper::Method::GET
        || head.version != hyper::Version::HTTP_11
        || !has_token(head, "upgrade", "websocket")
        || !has_token(head, "connection", "upgrade")
    {
        return false;
    }
    let table = shared.table.load();
    let found = table.find_api_at(head.uri.path(), head.uri.query(), |name| {
        head.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_string)
    });
    found.is_some_and(|(api, _)| matches!(api.kind, ApiKind::WebSocket))
}

/// A tunnel's backend side, once the backend accepted the upgrade: its `101` head and what it
/// sent after it, both for the client.
pub(crate) struct Opened {
    backend: BackendStream,
    pub answer: Vec<u8>,
    pub early: Vec<u8>,
}

/// Routes the upgrade (key checked) and opens the backend's side; or the answer refusing it.
pub(crate) async fn open_tunnel(
    shared: &Shared,
    head: RequestHead,
    remote: SocketAddr,
    tls: bool,
) -> Result<Opened, hyper::Response<crate::body::Body>> {
    let req = ClientRequest {
        method: head.method,
        uri: head.uri,
        version: head.version,
        headers: RequestHeaders::Raw(head.headers),
        body: RequestBody::Empty,
    };
    let client = Arc::new(ClientConnection::new(remote));
    let target = server::route_handshake(shared, &req, tls, client)
        .map_err(|e| json_error(e.status, &e.message))?;
    let (backend, answer, early) = open(shared, &req, &target)
        .await
        .map_err(|e| json_error(e.status, &e.message))?;
    Ok(Opened {
        backend,
        answer,
        early,
    })
}

type BackendStream = Box<dyn AsyncReadWrite>;

pub(crate) trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

fn bad_gateway(message: String) -> GatewayError {
    GatewayError::new(StatusCode::BAD_GATEWAY, "BackendConnectionFailure", message)
}

/// Connects to the backend and sends the handshake; the backend's `101` head and whatever it
/// sent after it.
async fn open(
    shared: &Shared,
    req: &ClientRequest,
    target: &server::HandshakeTarget,
) -> Result<(BackendStream, Vec<u8>, Vec<u8>), GatewayError> {
    let url = &target.url;
    let secure = matches!(url.scheme_str(), Some("wss" | "https"));
    let host = url
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_u16().unwrap_or(if secure { 443 } else { 80 });
    let tcp = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio::net::TcpStream::connect((host.as_str(), port)),
    )
    .await
    .map_err(|_| bad_gateway(format!("connecting to {host}:{port} timed out")))?
    .map_err(|e| bad_gateway(format!("{host}:{port}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let mut stream: BackendStream = if secure {
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| bad_gateway(format!("'{host}' is not a valid TLS server name")))?;
        let tls = shared
            .backend
            .websocket_tls()
            .connect(name, tcp)
            .await
            .map_err(|e| bad_gateway(format!("TLS with {host}:{port}: {e}")))?;
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let request = handshake_bytes(req, target, url);
    let exchange = async {
        stream.write_all(&request).await?;
        read_head(&mut stream).await
    };
    let (head, rest) = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            bad_gateway("the backend did not answer the WebSocket handshake in time".into())
        })?
        .map_err(|e| {
            bad_gateway(format!(
                "the WebSocket handshake with the backend failed: {e}"
            ))
        })?;
    let mut fields = [httparse::EMPTY_HEADER; 100];
    let mut parsed = httparse::Response::new(&mut fields);
    let status = match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => parsed.code.unwrap_or(0),
        _ => {
            return Err(bad_gateway(
                "the backend's handshake answer is not HTTP".into(),
            ));
        }
    };
    if status != 101 {
        return Err(bad_gateway(format!(
            "the backend refused the WebSocket handshake with status {status}"
        )));
    }
    Ok((stream, head, rest))
}

/// The handshake as the backend gets it: the client's fields, without hop-by-hop ones (the
/// upgrade's own are written anew) and without the subscription key.
fn handshake_bytes(
    req: &ClientRequest,
    target: &server::HandshakeTarget,
    url: &hyper::Uri,
) -> Vec<u8> {
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut out = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n",
        url.authority().map_or("", |a| a.as_str())
    )
    .into_bytes();
    if let RequestHeaders::Raw(raw) = &req.headers {
        for (name, value) in raw.iter() {
            let skip = gatehouse_http1::is_hop_by_hop_name(name)
                || name.eq_ignore_ascii_case(b"host")
                || name.eq_ignore_ascii_case(b"upgrade")
                || name.eq_ignore_ascii_case(target.key_header.as_str().as_bytes());
            if !skip {
                out.extend_from_slice(name);
                out.extend_from_slice(b": ");
                out.extend_from_slice(value);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Reads a response head (through its blank line); the bytes after it are returned too.
async fn read_head<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf.to_vec(), rest.to_vec()));
        }
        if buf.len() > MAX_BACKEND_HEAD {
            return Err(std::io::Error::other(
                "the answer's head is larger than 64 KiB",
            ));
        }
        if r.read_buf(&mut buf).await? == 0 {
            return Err(std::io::Error::other("the backend closed the connection"));
        }
    }
}

/// Copies bytes both ways until both directions end (each side's close is passed on).
pub(crate) async fn join<W: AsyncWrite + Unpin>(
    reader: Reader,
    mut client_write: W,
    opened: Opened,
) {
    let (mut backend_read, mut backend_write) = tokio::io::split(opened.backend);
    let mut client_read = reader.io;
    let pending = reader.buf;
    let upstream = async {
        if backend_write.write_all(&pending).await.is_ok() {
            let _ = tokio::io::copy(&mut client_read, &mut backend_write).await;
        }
        let _ = backend_write.shutdown().await;
    };
    let downstream = async {
        let _ = tokio::io::copy(&mut backend_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    // When one direction ends, the other gets a moment to pass on its last frames (a close
    // frame's answer), then the tunnel is dropped.
    let (upstream, downstream) = (std::pin::pin!(upstream), std::pin::pin!(downstream));
    match futures::future::select(upstream, downstream).await {
        futures::future::Either::Left(((), other)) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, other).await;
        }
        futures::future::Either::Right(((), other)) => {
            let _ = tokio::time::timeout(CLOSE_GRACE, other).await;
        }
    }
}

/// How long one direction of a tunnel may go on after the other ended.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
