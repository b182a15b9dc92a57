//! GraphQL pass-through: a query is checked against the API's schema before it goes to the
//! backend; one that does not parse or validate is answered 400 with GraphQL's error shape
//! (`{"errors": [{"message", "locations"}]}`), as a GraphQL server would answer it.
//!
//! Invariant: a request that is checked reaches the backend with exactly the body it came with.

use crate::body::Body;
use crate::request::ClientRequest;
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

/// Queries larger than this are refused before parsing.
const MAX_QUERY_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct GraphQlSchema {
    schema: Valid<Schema>,
}

impl GraphQlSchema {
    pub fn parse(sdl: &str) -> Result<GraphQlSchema, String> {
        Schema::parse_and_validate(sdl, "schema.graphql")
            .map(|schema| GraphQlSchema { schema })
            .map_err(|e| e.errors.to_string())
    }

    /// The errors of `query` against the schema, in GraphQL's shape; none when it is valid.
    pub fn errors(&self, query: &str) -> Vec<Value> {
        match ExecutableDocument::parse_and_validate(&self.schema, query, "query.graphql") {
            Ok(_) => Vec::new(),
            Err(with) => with
                .errors
                .iter()
                .map(|d| serde_json::to_value(d.to_json()).unwrap_or(Value::Null))
                .collect(),
        }
    }
}

fn refusal(errors: Vec<Value>) -> Response<Body> {
    let body = json!({ "errors": errors }).to_string();
    let mut resp = Response::new(crate::body::full(body));
    *resp.status_mut() = StatusCode::BAD_REQUEST;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn message(text: &str) -> Vec<Value> {
    vec![json!({ "message": text })]
}

/// The query of a GET (`?query=`) or a POST (`application/graphql`, or JSON with `query`).
fn query_of(req: &ClientRequest, body: &[u8]) -> Result<String, Vec<Value>> {
    if req.method == hyper::Method::GET {
        let q = req.uri.query().unwrap_or_default();
        return form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| {
                message("A GET request must carry the query in the 'query' parameter.")
            });
    }
    let content_type = req.headers.get_str("content-type").unwrap_or_default();
    if content_type.starts_with("application/graphql") {
        return std::str::from_utf8(body)
            .map(str::to_string)
            .map_err(|_| message("The query is not UTF-8."));
    }
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| message(&format!("The request body is not valid JSON: {e}")))?;
    doc.get("query")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| message("The request body must be a JSON object with a 'query' string."))
}

/// Reads the request's body (kept in the request, so it still goes to the backend unchanged)
/// and checks its query; the 400 to answer when it does not validate.
pub(crate) async fn check(
    schema: &GraphQlSchema,
    req: &mut ClientRequest,
    max_body: u64,
) -> Result<(), Response<Body>> {
    let limit = (max_body as usize).min(MAX_QUERY_BYTES);
    let Some(bytes) = req.buffer_body(limit).await else {
        return Err(refusal(message(&format!(
            "The request body is larger than {limit} bytes, or could not be read."
        ))));
    };
    let query = query_of(req, &bytes).map_err(refusal)?;
    let errors = schema.errors(&query);
    if !errors.is_empty() {
        return Err(refusal(errors));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_against_the_schema() {
        let s = GraphQlSchema::parse("type Query { hello(name: String): String, n: Int }").unwrap();
        assert!(s.errors("{ hello(name: \"a\") n }").is_empty());
        let e = s.errors("{ nope }");
        assert_eq!(e.len(), 1);
        assert!(e[0]["message"].as_str().unwrap().contains("nope"), "{e:?}");
        assert_eq!(e[0]["locations"][0]["line"], 1);
        assert!(!s.errors("{ hello(").is_empty());
        assert!(GraphQlSchema::parse("type Query { x: Missing }").is_err());
    }
}
