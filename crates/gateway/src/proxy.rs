//! Forwarding to backends: pooled HTTP/1.1 and HTTP/2 (ALPN) connections over plain TCP or
//! rustls, bodies streamed both ways, connect and response timeouts, hop-by-hop headers removed.

use crate::h1;
use bytes::Bytes;
use http_body_util::{BodyExt, combinators::BoxBody};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A body the gateway sends or receives. A response read on one of the gateway's own backend
/// connections for a caller that asked for its fields raw ([`HeaderEdits::raw_response`])
/// carries them here ([`Body::fields`]): fields in the response's map come in addition and
/// win — a raw field whose name the map has is not written. (Here rather than in the
/// response's extensions: inserting there allocates a map per response.)
pub struct Body {
    inner: BoxBody<Bytes, BoxError>,
    fields: Option<crate::request::RawHead>,
}

impl Body {
    pub fn new<B>(body: B) -> Body
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        Body {
            inner: body.map_err(Into::into).boxed(),
            fields: None,
        }
    }

    /// The response head's fields as read (hop-by-hop ones left out), if kept raw.
    pub fn fields(&self) -> Option<&crate::request::RawHead> {
        self.fields.as_ref()
    }

    pub fn take_fields(&mut self) -> Option<crate::request::RawHead> {
        self.fields.take()
    }

    pub fn set_fields(&mut self, fields: Option<crate::request::RawHead>) {
        self.fields = fields;
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The client's request body could not be read (not valid chunked, shorter than declared, the
/// client gone): the client's fault, not the backend's. Request bodies fail with this error so
/// that a forward that failed because of it can be told apart however deep it is wrapped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ClientBodyError(pub String);

/// The message of a [`ClientBodyError`] anywhere in `error`'s source chain.
pub fn client_body_error(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(body) = e.downcast_ref::<ClientBodyError>() {
            return Some(body.0.clone());
        }
        next = e.source();
    }
    None
}

/// Why forwarding failed.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("the client's request body could not be read: {0}")]
    ClientBody(String),
    #[error("the backend could not be reached: {0}")]
    Connect(String),
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the backend connection failed: {0}")]
    Other(String),
}

type Pool = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

#[derive(Clone)]
pub struct Backend {
    client: Pool,
    /// For backend entities whose `tls` says not to check the certificate's name
    /// (`validateCertificateName: false`) or its chain (`validateCertificateChain: false`).
    lenient_name: Pool,
    lenient_chain: Pool,
    pub response_timeout: Duration,
    connect_timeout: Duration,
}

/// How strictly a backend's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsCheck {
    #[default]
    Full,
    /// The chain must be trusted, but the name may differ (APIM's validateCertificateName=false).
    ChainOnly,
    /// Nothing is checked (validateCertificateChain=false): for self-signed test backends.
    None,
}

/// A verifier that relaxes the standard one as a backend entity asks.
#[derive(Debug)]
struct Lenient {
    inner: std::sync::Arc<rustls::client::WebPkiServerVerifier>,
    check: TlsCheck,
}

impl rustls::client::danger::ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self.check == TlsCheck::None {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

pub fn empty() -> Body {
    Body::new(http_body_util::Empty::new())
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Body::new(http_body_util::Full::new(bytes.into()))
}

impl Backend {
    /// A pooled client; `extra_roots` (PEM) are trusted besides the public web roots.
    pub fn new(
        connect_timeout: Duration,
        response_timeout: Duration,
        extra_roots: Option<&std::path::Path>,
    ) -> anyhow::Result<Backend> {
        use anyhow::Context;
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(path) = extra_roots {
            for cert in CertificateDer::pem_file_iter(path)
                .with_context(|| format!("cannot read the backend CA file {}", path.display()))?
            {
                let cert =
                    cert.with_context(|| format!("{} is not PEM certificates", path.display()))?;
                roots.add(cert).with_context(|| {
                    format!(
                        "a certificate in {} cannot be used as a root",
                        path.display()
                    )
                })?;
            }
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = std::sync::Arc::new(roots);
        let pool = |check: TlsCheck| -> anyhow::Result<Pool> {
            let mut http = HttpConnector::new();
            http.set_connect_timeout(Some(connect_timeout));
            http.set_nodelay(true);
            http.enforce_http(false);
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("default TLS versions are supported")?;
            let tls = match check {
                TlsCheck::Full => builder
                    .with_root_certificates(roots.clone())
                    .with_no_client_auth(),
                relaxed => {
                    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .build()
                    .context("the backend certificate verifier")?;
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(std::sync::Arc::new(Lenient {
                            inner,
                            check: relaxed,
                        }))
                        .with_no_client_auth()
                }
            };
            let https = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http);
            Ok(Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .build(https))
        };
        Ok(Backend {
            client: pool(TlsCheck::Full)?,
            lenient_name: pool(TlsCheck::ChainOnly)?,
            lenient_chain: pool(TlsCheck::None)?,
            response_timeout,
            connect_timeout,
        })
    }

    /// Sends the request; the response body streams from the backend. With an `affinity` (the
    /// client's HTTP/1.1 connection), a plain-HTTP request goes over that connection's own
    /// backend connection.
    pub fn forward<'a>(
        &'a self,
        req: hyper::Request<Body>,
        edits: &'a HeaderEdits,
        affinity: Option<&'a Affinity>,
    ) -> impl Future<Output = Result<hyper::Response<Body>, ForwardError>> + Send + 'a {
        self.forward_checked(req, edits, TlsCheck::Full, affinity, None)
    }

    /// Like `forward`, checking an HTTPS backend's certificate as `check` says, and answering
    /// within `timeout` when it is shorter than the gateway's response timeout (one timer for
    /// both).
    ///
    /// Not an `async fn`, nor is [`Backend::forward`]: each layer of async fn would keep its
    /// own copy of the request in the future, which is copied whole as every request starts.
    pub fn forward_checked<'a>(
        &'a self,
        req: hyper::Request<Body>,
        edits: &'a HeaderEdits,
        check: TlsCheck,
        affinity: Option<&'a Affinity>,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<hyper::Response<Body>, ForwardError>> + Send + 'a {
        let timeout = timeout.map_or(self.response_timeout, |t| t.min(self.response_timeout));
        match affinity {
            Some(affinity) if req.uri().scheme() == Some(&hyper::http::uri::Scheme::HTTP) => {
                futures::future::Either::Left(self.forward_own(affinity, req, edits, timeout))
            }
            // Boxed: its future is large, and the plain path's future would be as large.
            _ => futures::future::Either::Right(Box::pin(
                self.forward_pooled(req, edits, check, timeout),
            )),
        }
    }

    /// Sends the request through the shared pool (HTTPS backends, HTTP/2 clients).
    async fn forward_pooled(
        &self,
        mut req: hyper::Request<Body>,
        edits: &HeaderEdits,
        check: TlsCheck,
        timeout: Duration,
    ) -> Result<hyper::Response<Body>, ForwardError> {
        match &edits.headers {
            Some(ClientHeaders::Shared(headers)) => *req.headers_mut() = headers.to_map(),
            Some(ClientHeaders::Raw(raw)) => *req.headers_mut() = raw.to_map(),
            None => {}
        }
        edits.apply(req.headers_mut());
        let client = match check {
            TlsCheck::Full => &self.client,
            TlsCheck::ChainOnly => &self.lenient_name,
            TlsCheck::None => &self.lenient_chain,
        };
        match tokio::time::timeout(timeout, client.request(req)).await {
            Err(_) => Err(ForwardError::Timeout(timeout)),
            Ok(Ok(resp)) => Ok(resp.map(Body::new)),
            Ok(Err(e)) if e.is_connect() => Err(ForwardError::Connect(source_chain(&e))),
            Ok(Err(e)) => Err(match client_body_error(&e) {
                Some(detail) => ForwardError::ClientBody(detail),
                None => ForwardError::Other(source_chain(&e)),
            }),
        }
    }

    /// Sends a plain-HTTP request over the client connection's own backend connection (see
    /// [`crate::h1`]), opened on first use and kept while it stays open. A kept connection the
    /// backend has closed meanwhile is replaced, and a request without a body that it did not
    /// answer is sent again on the new one.
    async fn forward_own(
        &self,
        affinity: &Affinity,
        req: hyper::Request<Body>,
        edits: &HeaderEdits,
        timeout: Duration,
    ) -> Result<hyper::Response<Body>, ForwardError> {
        let (parts, body) = req.into_parts();
        let Some(authority) = parts.uri.authority() else {
            return Err(ForwardError::Other(format!("{} names no host", parts.uri)));
        };
        let (key, kept) = affinity.idle.take(authority.as_str());
        let resendable = hyper::body::Body::is_end_stream(&body);
        // Pinned in place: handed to `select!` by value, it would be stored twice.
        let exchange = std::pin::pin!(async {
            let (mut conn, reused) = match kept {
                Some(c) => (c, true),
                None => (Box::pin(self.connect_own(authority)).await?, false),
            };
            let head = match conn.request(&parts, edits, body).await {
                Ok(head) => head,
                Err(h1::SendError::NoResponse(_)) if reused && resendable => {
                    conn = Box::pin(self.connect_own(authority)).await?;
                    conn.request(&parts, edits, empty())
                        .await
                        .map_err(ForwardError::from)?
                }
                Err(e) => return Err(e.into()),
            };
            Ok(conn.into_response(
                head,
                (affinity.idle.clone(), key),
                timeout,
                edits.raw_response,
            ))
        });
        let deadline = tokio::time::Instant::now() + timeout;
        let mut timer =
            std::mem::take(&mut *affinity.timer.lock().unwrap_or_else(|e| e.into_inner()));
        let result = tokio::select! {
            biased;
            result = exchange => result,
            () = timer.until(deadline) => Err(ForwardError::Timeout(timeout)),
        };
        *affinity.timer.lock().unwrap_or_else(|e| e.into_inner()) = timer;
        result
    }

    /// Boxed where it is awaited: connecting is rare (once per client connection and backend),
    /// and its future is large, so it should not enlarge every request's future.
    async fn connect_own(
        &self,
        authority: &hyper::http::uri::Authority,
    ) -> Result<h1::Connection, ForwardError> {
        let explicit_port = authority.port_u16();
        let port = explicit_port.unwrap_or(80);
        // As the pooled client writes it: the port only when it is not the default.
        let host_header = match explicit_port {
            Some(80) | None => HeaderValue::from_str(authority.host()),
            Some(_) if !authority.as_str().contains('@') => {
                HeaderValue::from_str(authority.as_str())
            }
            Some(p) => HeaderValue::from_str(&format!("{}:{p}", authority.host())),
        }
        .map_err(|_| ForwardError::Other(format!("{authority} is not a valid host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect((host, port)),
        )
        .await
        {
            Err(_) => {
                return Err(ForwardError::Connect(format!(
                    "connecting to {host}:{port} timed out after {:?}",
                    self.connect_timeout
                )));
            }
            Ok(Err(e)) => return Err(ForwardError::Connect(format!("{host}:{port}: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = stream.set_nodelay(true);
        Ok(h1::Connection::new(stream, host_header))
    }
}

impl From<h1::SendError> for ForwardError {
    fn from(e: h1::SendError) -> ForwardError {
        match e {
            h1::SendError::NoResponse(detail) | h1::SendError::Failed(detail) => {
                ForwardError::Other(detail)
            }
            h1::SendError::ClientBody(detail) => ForwardError::ClientBody(detail),
        }
    }
}

/// The backend connections of one client HTTP/1.1 connection.
///
/// Why: a client connection sends one request at a time, so one backend connection serves it
/// fully, and the task serving the client can drive it itself ([`crate::h1`]) — no shared
/// pool's checkout, no connection task, no channels (measured: 17,000 of 43,400 instructions
/// per request went there with hyper's client). It holds one connection per backend, for the
/// few backends last used (a client alternating between APIs on different backends keeps all
/// of them); they close when the client connection ends — at the latest when the client stays
/// idle past the header read timeout — so a backend sees no more connections than there are
/// recently active clients.
#[derive(Default)]
pub struct Affinity {
    idle: std::sync::Arc<h1::Idle>,
    /// The response timeout's timer, reused from exchange to exchange.
    timer: std::sync::Mutex<crate::deadline::Deadline>,
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// APIM's correlation header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Removes hop-by-hop headers, including those named in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them: one pass over the names decides (the names are
    // pre-parsed, so no lookup hashes a string).
    let mut present = [false; HOP_BY_HOP.len()];
    let mut named = Vec::new();
    for (k, v) in headers.iter() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == k) {
            present[i] = true;
            if i == 0 {
                connection_tokens(v, &mut named);
            }
        }
    }
    for n in named {
        headers.remove(n);
    }
    for (h, present) in HOP_BY_HOP.into_iter().zip(present) {
        if present {
            headers.remove(h);
        }
    }
}

/// What the gateway changes in a client's headers on the way to the backend: hop-by-hop
/// headers (and those `Connection` names) and the subscription key header go, the client's
/// `Host` goes on as `X-Forwarded-Host`, `X-Forwarded-For` gets the client's address appended,
/// `X-Forwarded-Proto` is set, and the request id goes on as `x-request-id` and `Request-Id`.
///
/// Applied to the header map for pooled backends ([`HeaderEdits::apply`]); a client
/// connection's own backend connections apply it while writing the request head
/// ([`crate::h1`]), so that the map is neither searched nor changed per request. Both give the
/// same headers (tested in `h1`).
pub struct HeaderEdits {
    pub key_header: HeaderName,
    /// The client's address (see [`forwarded_for`]).
    pub client: HeaderValue,
    pub https: bool,
    pub request_id: Option<crate::request::RequestId>,
    /// The client's headers, when the request does not carry them itself: a policy exchange
    /// keeps them shared (policies may read them after the forward), and copying the map per
    /// request would cost more than the rest of the edits.
    pub headers: Option<ClientHeaders>,
    /// Whether the response's fields may stay as read ([`Body::fields`]): for a caller that
    /// writes them to the client as they are, rather than reading them.
    pub raw_response: bool,
}

/// A backend response's fields as read, as a policy exchange keeps them (its original
/// headers) until a policy reads or changes them.
#[derive(Clone)]
pub struct RawFields(pub crate::request::RawHead);

/// Where the client's headers are, when not in the request's own map.
pub enum ClientHeaders {
    /// Shared with a policy exchange (policies may read them after the forward).
    Shared(std::sync::Arc<crate::request::RequestHeaders>),
    /// As read from an HTTP/1.x client (see [`crate::request`]).
    Raw(crate::request::RawHead),
}
impl HeaderEdits {
    pub fn apply(&self, headers: &mut HeaderMap) {
        strip_hop_by_hop(headers);
        headers.remove(&self.key_header);
        let host = headers.remove(hyper::header::HOST);
        add_forwarded(
            headers,
            &self.client,
            if self.https { "https" } else { "http" },
            host,
        );
        if let Some(id) = &self.request_id {
            let value = id.to_header_value();
            headers.insert(X_REQUEST_ID.clone(), value.clone());
            headers.insert(REQUEST_ID.clone(), value);
        }
    }
}

/// Whether `name` is a hop-by-hop header (those named in `Connection` aside).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name)
}

pub use gatehouse_http1::is_hop_by_hop_name;

static HOP_BY_HOP: [&HeaderName; 9] = [
    &hyper::header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &hyper::header::PROXY_AUTHENTICATE,
    &hyper::header::PROXY_AUTHORIZATION,
    &hyper::header::TE,
    &hyper::header::TRAILER,
    &hyper::header::TRANSFER_ENCODING,
    &hyper::header::UPGRADE,
];

/// Adds the header names one `Connection` value lists to `named` (its usual tokens,
/// `keep-alive` and `close`, name none).
fn connection_tokens(value: &HeaderValue, named: &mut Vec<HeaderName>) {
    for token in value.as_bytes().split(|&b| b == b',') {
        let token = token.trim_ascii();
        if token.is_empty()
            || token.eq_ignore_ascii_case(b"keep-alive")
            || token.eq_ignore_ascii_case(b"close")
        {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token) {
            named.push(name);
        }
    }
}

/// The client's address as `X-Forwarded-For` carries it (made once per client connection).
pub fn forwarded_for(client_ip: std::net::IpAddr) -> HeaderValue {
    HeaderValue::from_str(&client_ip.to_string()).expect("an IP address is a valid header value")
}

/// Appends the client address (see [`forwarded_for`]) to `X-Forwarded-For` and sets
/// `X-Forwarded-Proto`/`-Host`.
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    proto: &str,
    host: Option<HeaderValue>,
) {
    let chained = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.is_empty())
        .map(|prev| format!("{prev}, {}", client_ip.to_str().unwrap_or_default()))
        .and_then(|v| HeaderValue::from_str(&v).ok());
    headers.insert(
        X_FORWARDED_FOR.clone(),
        chained.unwrap_or_else(|| client_ip.clone()),
    );
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(if proto == "https" { "https" } else { "http" }),
    );
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_names_are_known_in_any_case() {
        for h in HOP_BY_HOP {
            let name = h.as_str();
            assert!(is_hop_by_hop_name(name.as_bytes()), "{name}");
            assert!(
                is_hop_by_hop_name(name.to_ascii_uppercase().as_bytes()),
                "{name}"
            );
        }
        for other in [
            "host",
            "tE2",
            "trailers",
            "connections",
            "x-upgrade",
            "",
            "keep-alivE-",
        ] {
            assert!(!is_hop_by_hop_name(other.as_bytes()), "{other}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Session"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-session", "abc"),
            ("x-other", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("transfer-encoding", "chunked"),
            ("content-type", "text/plain"),
            ("x-kept", "yes"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
        // Nothing to remove: the map is left as it was.
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn forwarded_headers_append_to_a_previous_proxy_chain() {
        let mut h = HeaderMap::new();
        h.insert(&X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        add_forwarded(
            &mut h,
            &forwarded_for("192.0.2.7".parse().unwrap()),
            "https",
            Some(HeaderValue::from_static("api.contoso.com")),
        );
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, 192.0.2.7");
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
        assert_eq!(h[&X_FORWARDED_HOST], "api.contoso.com");
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, &forwarded_for("::1".parse().unwrap()), "http", None);
        assert_eq!(h[&X_FORWARDED_FOR], "::1");
        assert!(!h.contains_key(&X_FORWARDED_HOST));
    }
}
