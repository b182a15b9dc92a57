//! For unit tests of policies: a document run against an [`Exchange`] with in-memory
//! [`Services`] — no gateway, no sockets, no runtime.

use crate::doc::{NoResolver, parse_document};
use crate::exchange::{
    BackendInfo, BoxFut, Cached, Counted, CounterKey, Exchange, Flow, Forward, Outgoing,
    ResponseParts, SendError, Services,
};
use crate::exec::{Chain, run};
use crate::position::Section;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

/// Services that answer at once: the backend says 200 `backend`, limits count in a map, the
/// cache is a map, send-request fails.
#[derive(Default)]
pub struct Fake {
    pub counts: Mutex<HashMap<String, u64>>,
    pub cache: Mutex<HashMap<String, Cached>>,
    pub traces: Mutex<Vec<String>>,
}

impl Services for Fake {
    fn forward<'a>(
        &'a self,
        ex: &'a mut Exchange,
        _: Forward,
    ) -> BoxFut<'a, Result<(), crate::exchange::Failure>> {
        ex.response = Some(ResponseParts {
            status: 200,
            reason: "OK".into(),
            headers: Vec::new().into(),
            body: Some(b"backend".to_vec()),
        });
        Box::pin(async { Ok(()) })
    }
    fn send(&self, _: Outgoing, t: u64) -> BoxFut<'_, Result<ResponseParts, SendError>> {
        Box::pin(async move { Err(SendError::Timeout(t)) })
    }
    fn send_one_way(&self, _: Outgoing) {}
    fn sleep(&self, _: std::time::Duration) -> BoxFut<'_, ()> {
        Box::pin(async {})
    }
    fn acquire(&self, _: &str, _: u64) -> Option<Box<dyn std::any::Any + Send>> {
        Some(Box::new(()))
    }
    fn count(&self, key: CounterKey<'_>, calls: u64, period: u64, n: u64, _: bool) -> Counted {
        let mut counts = self.counts.lock().unwrap();
        let used = counts.entry(key.to_string()).or_default();
        let allowed = *used + n <= calls;
        if allowed {
            *used += n;
        }
        Counted {
            allowed,
            remaining: calls.saturating_sub(*used),
            retry_after_secs: if allowed { 0 } else { period },
        }
    }
    fn backend(&self, _: &str) -> Option<BackendInfo> {
        None
    }
    fn example(&self, _: u16, _: Option<&str>) -> Option<(String, String)> {
        None
    }
    fn trace(&self, source: &str, message: &str) {
        self.traces
            .lock()
            .unwrap()
            .push(format!("{source}: {message}"));
    }
    fn openid_keys(&self, _: &str) -> Option<Vec<serde_json::Value>> {
        None
    }
    fn cache_get(&self, key: &str) -> Option<Cached> {
        self.cache.lock().unwrap().get(key).cloned()
    }
    fn cache_put(&self, key: &str, value: Cached, _: u64) {
        self.cache.lock().unwrap().insert(key.into(), value);
    }
    fn cache_remove(&self, key: &str) {
        self.cache.lock().unwrap().remove(key);
    }
}

/// Runs `section` of a one-scope document (global) on `ex`. The fake services never wait, so
/// one poll finishes it.
pub fn run_section(xml: &str, section: Section, ex: &mut Exchange, svc: &Fake) -> Flow {
    let doc = parse_document(xml, "rawxml", &NoResolver).expect("the document compiles");
    let chain = Chain {
        levels: [Some(&doc), None, None, None],
    };
    let mut future = std::pin::pin!(run(&chain, section, ex, svc));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(flow) => flow,
        std::task::Poll::Pending => panic!("the fake services never wait"),
    }
}

/// A GET with these request headers.
pub fn get(headers: &[(&str, &str)]) -> Exchange {
    Exchange {
        method: "GET".into(),
        scheme: "https",
        backend_path: "/".into(),
        request_headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
            .into(),
        ..Exchange::default()
    }
}

/// `<policies>` with `inbound` as its inbound section.
pub fn inbound(inbound: &str) -> String {
    format!(
        "<policies><inbound>{inbound}</inbound><backend><forward-request /></backend><outbound /><on-error /></policies>"
    )
}
