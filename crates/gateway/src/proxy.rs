//! Forwarding to backends: pooled HTTP/1.1 and HTTP/2 (ALPN) connections over plain TCP or
//! rustls, bodies streamed both ways, connect and response timeouts, hop-by-hop headers removed.

use crate::body::{Body, client_body_error, empty};
use crate::h1;
use crate::headers::{ClientHeaders, HeaderEdits};
use hyper::header::HeaderValue;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

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
    /// TLS for WebSocket backends (`wss://`): HTTP/1.1 only, certificates checked in full.
    websocket_tls: tokio_rustls::TlsConnector,
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
        let websocket_tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("default TLS versions are supported")?
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        Ok(Backend {
            websocket_tls: tokio_rustls::TlsConnector::from(std::sync::Arc::new(websocket_tls)),
            client: pool(TlsCheck::Full)?,
            lenient_name: pool(TlsCheck::ChainOnly)?,
            lenient_chain: pool(TlsCheck::None)?,
            response_timeout,
            connect_timeout,
        })
    }

    /// The TLS connector for `wss://` WebSocket backends.
    pub(crate) fn websocket_tls(&self) -> &tokio_rustls::TlsConnector {
        &self.websocket_tls
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
