//! Every policy Gatehouse runs, one module per family, and the one table that names them.
//!
//! Adding a policy: a module (or a family's) with its type, a `parse_…` function that checks
//! the element and builds it, and `impl Policy` (how it runs, and what the gateway's fast
//! paths may know of it); then one line in [`TABLE`]. Nothing else names policies.

pub mod access;
pub mod body;
pub mod cache;
pub mod content;
pub mod control;
pub mod cors;
pub mod headers;
pub mod limits;
pub mod observe;
pub mod request;
pub mod respond;
pub mod send;
pub mod validate;
pub mod validate_jwt;
pub mod variables;

use crate::compile::Parse;

/// Each policy element by name, and its parser.
pub const TABLE: &[(&str, Parse)] = &[
    ("set-header", headers::parse_set_header),
    ("set-query-parameter", headers::parse_set_header),
    ("check-header", headers::parse_check_header),
    ("set-method", request::parse_set_method),
    ("rewrite-uri", request::parse_rewrite_uri),
    ("set-backend-service", request::parse_set_backend_service),
    ("forward-request", request::parse_forward_request),
    ("set-body", body::parse_set_body),
    ("find-and-replace", body::parse_find_and_replace),
    ("json-to-xml", body::parse_convert),
    ("xml-to-json", body::parse_convert),
    ("jsonp", body::parse_jsonp),
    ("redirect-content-urls", body::parse_redirect_content_urls),
    ("set-status", respond::parse_set_status),
    ("return-response", respond::parse_return_response),
    ("mock-response", respond::parse_mock_response),
    ("set-variable", variables::parse_set_variable),
    ("trace", variables::parse_trace),
    ("choose", control::parse_choose),
    ("retry", control::parse_retry),
    ("limit-concurrency", control::parse_limit_concurrency),
    ("wait", control::parse_wait),
    ("ip-filter", access::parse_ip_filter),
    ("authentication-basic", access::parse_authentication_basic),
    ("validate-jwt", validate_jwt::parse_validate_jwt),
    (
        "validate-azure-ad-token",
        validate_jwt::parse_validate_azure_ad_token,
    ),
    (
        "authentication-managed-identity",
        access::parse_authentication_managed_identity,
    ),
    ("emit-metric", observe::parse_emit_metric),
    ("validate-parameters", validate::parse_validate_parameters),
    ("validate-content", content::parse_validate_content),
    ("validate-headers", validate::parse_validate_headers),
    ("validate-status-code", validate::parse_validate_status_code),
    ("log-to-eventhub", observe::parse_log_to_eventhub),
    ("cors", cors::parse_cors),
    ("rate-limit", limits::parse_limit),
    ("rate-limit-by-key", limits::parse_limit),
    ("quota", limits::parse_limit),
    ("quota-by-key", limits::parse_limit),
    ("send-request", send::parse_send_request),
    ("send-one-way-request", send::parse_send_request),
    ("cache-lookup", cache::parse_cache_lookup),
    ("cache-store", cache::parse_cache_store),
    ("cache-lookup-value", cache::parse_cache_lookup_value),
    ("cache-store-value", cache::parse_cache_store_value),
    ("cache-remove-value", cache::parse_cache_remove_value),
];

/// A policy's name (as a static string, for the nodes) and parser.
pub fn find(name: &str) -> Option<(&'static str, Parse)> {
    TABLE.iter().find(|(n, _)| *n == name).copied()
}

/// APIM policies this engine does not run yet: refused by name at write time.
pub const KNOWN_UNSUPPORTED: &[&str] = &[
    "validate-client-certificate",
    "validate-graphql-request",
    "authentication-certificate",
    "xsl-transform",
    "cross-domain",
    "proxy",
    "get-authorization-context",
    "set-backend-service-dapr",
    "publish-to-dapr",
    "invoke-dapr-binding",
    "llm-token-limit",
    "azure-openai-token-limit",
    "llm-emit-token-metric",
    "azure-openai-emit-token-metric",
    "llm-semantic-cache-lookup",
    "llm-semantic-cache-store",
    "azure-openai-semantic-cache-lookup",
    "azure-openai-semantic-cache-store",
    "quota-by-key-v2",
    "http-data-source",
    "publish-event",
    "set-graphql-resolver",
    "sql-data-source",
    "cosmosdb-data-source",
    "mock-response-v2",
    "trace-v2",
    "include-fragment-v2",
];
