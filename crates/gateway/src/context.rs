//! What a request carries through the pipeline: its routing results and identity
//! (`RequestContext`), the client connection it came on, and the gateway's errors with APIM's
//! bodies.

use crate::body::Body;
use crate::proxy::{self, ForwardError};
use crate::request::RequestId;
use crate::table::{
    ApiRoute, OperationRoute, ProductInfo, RoutingTable, SubscriptionInfo, UserInfo,
};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub(crate) const STATUS_PATH: &str = "/status-0123456789abcdef";

/// What routing found that only the policy path takes on: the path after the API's, and the
/// URL template's parameters.
pub(crate) struct Routed {
    pub rest: String,
    pub parameters: Vec<(String, String)>,
}

/// What the pipeline knows about a request (the policy engine's `context`).
pub(crate) struct RequestContext {
    pub request_id: RequestId,
    pub table: Arc<RoutingTable>,
    pub api: Option<Arc<ApiRoute>>,
    pub operation: Option<usize>,
    /// Where the request path after the API's path starts ([`RequestContext::rest`]).
    pub rest_start: usize,
    pub product: Option<Arc<ProductInfo>>,
    pub subscription: Option<Arc<SubscriptionInfo>>,
    pub user: Option<Arc<UserInfo>>,
    pub started: Instant,
    /// A CORS preflight (OPTIONS with Access-Control-Request-Method): routed by the method it
    /// asks about, without a key, and only cors policies run for it.
    pub preflight: bool,
    /// What trace policies wrote for this request: `(source, message)`, for the access log.
    pub traces: std::sync::Mutex<Vec<(String, String)>>,
    /// The client connection this request came on.
    pub client: Arc<ClientConnection>,
    /// Whether it speaks HTTP/1.x (one request at a time).
    pub http1: bool,
}

/// What the gateway keeps per client connection.
pub(crate) struct ClientConnection {
    /// The client's address as `X-Forwarded-For` carries it.
    pub forwarded_for: HeaderValue,
    /// Its own backend connections (used by HTTP/1.x clients only).
    pub backends: proxy::Affinity,
}

impl ClientConnection {
    pub(crate) fn new(remote: SocketAddr) -> ClientConnection {
        ClientConnection {
            forwarded_for: crate::headers::forwarded_for(remote.ip()),
            backends: proxy::Affinity::default(),
        }
    }
}

impl RequestContext {
    /// A request not routed yet, on `table`.
    pub(crate) fn start(
        request_id: RequestId,
        table: Arc<RoutingTable>,
        started: Instant,
        client: Arc<ClientConnection>,
        http1: bool,
    ) -> RequestContext {
        RequestContext {
            request_id,
            table,
            api: None,
            operation: None,
            rest_start: 0,
            product: None,
            subscription: None,
            user: None,
            started,
            preflight: false,
            traces: Default::default(),
            client,
            http1,
        }
    }

    /// Where the request was routed, as its policies are looked up.
    pub(crate) fn scopes(&self) -> crate::policies::Scopes<'_> {
        crate::policies::Scopes {
            product: self.product.as_ref().map(|p| &*p.id),
            api: self
                .api
                .as_ref()
                .map(|a| (&*a.id, a.is_current, a.revision)),
            operation: self.operation().map(|o| &*o.id),
        }
    }

    /// The backend connections this request may use: its client connection's, when that sends
    /// one request at a time.
    pub(crate) fn affinity(&self) -> Option<&proxy::Affinity> {
        self.http1.then_some(&self.client.backends)
    }

    /// The request path after the API's path (what is appended to the backend URL), from the
    /// request's path.
    pub(crate) fn rest<'p>(&self, path: &'p str) -> &'p str {
        crate::table::rest_of(path, self.rest_start)
    }

    pub(crate) fn operation(&self) -> Option<&OperationRoute> {
        self.api
            .as_ref()
            .zip(self.operation)
            .map(|(a, i)| &a.operations[i])
    }
}

/// An error that ends the request in on-error: status, APIM's reason and message.
pub(crate) struct GatewayError {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl GatewayError {
    pub(crate) fn new(
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        GatewayError {
            status,
            reason,
            message: message.into(),
        }
    }
}

pub(crate) const MSG_NOT_FOUND: &str = "Resource not found";

pub(crate) const MSG_OPERATION_NOT_FOUND: &str =
    "Unable to match incoming request to an operation.";

pub(crate) const MSG_KEY_MISSING: &str = "Access denied due to missing subscription key. Make sure to include subscription key when making requests to an API.";

pub(crate) const MSG_KEY_INVALID: &str = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.";

/// APIM's JSON error body (the request id header is added with the [`Answer`]).
pub(crate) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"statusCode": status.as_u16(), "message": message});
    let mut resp = Response::new(crate::body::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// How the client's headers are made fit for the backend (see [`crate::headers::HeaderEdits`]).
pub(crate) fn backend_headers(
    api: &ApiRoute,
    ctx: &RequestContext,
    tls: bool,
) -> crate::headers::HeaderEdits {
    crate::headers::HeaderEdits {
        key_header: api.key_header.clone(),
        client: ctx.client.forwarded_for.clone(),
        https: tls,
        request_id: Some(ctx.request_id.clone()),
        headers: None,
        raw_response: false,
        policy: Vec::new(),
    }
}

/// A failed forward as APIM answers it: 504 on a timeout, 502 otherwise.
pub(crate) fn forward_error(e: ForwardError, api: &ApiRoute) -> GatewayError {
    match e {
        ForwardError::Timeout(_) => GatewayError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "Timeout",
            "Gateway timeout: the backend did not respond in time.",
        ),
        ForwardError::ClientBody(detail) => {
            tracing::info!(api = %api.id, error = %detail, "the client's request body could not be read");
            GatewayError::new(
                StatusCode::BAD_REQUEST,
                "ClientConnectionFailure",
                format!("Bad request: {detail}."),
            )
        }
        ForwardError::Connect(detail) | ForwardError::Other(detail) => {
            tracing::warn!(api = %api.id, error = %detail, "backend request failed");
            GatewayError::new(
                StatusCode::BAD_GATEWAY,
                "BackendConnectionFailure",
                "Bad gateway: the backend could not be reached.",
            )
        }
    }
}

/// How long a policy's forward-request waits for the backend (at least a second).
pub(crate) fn forward_timeout(forward: &gatehouse_policy::exec::Forward) -> std::time::Duration {
    std::time::Duration::from_secs(forward.timeout_secs.max(1))
}
