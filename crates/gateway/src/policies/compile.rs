//! Every scope's policy document compiled from the mirror (again only for what a change
//! touches), and the chain of documents a routed request runs.

use crate::mirror::{Change, ConfigMirror};
use gatehouse_model::Kind;
use gatehouse_policy::Document;
use gatehouse_policy::doc::Resolver;
use gatehouse_policy::exec::{BackendInfo, Chain};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// A scope's compiled document, or why it does not compile.
/// Where a request was routed, as its chain of documents is looked up: the product's id, the
/// API's id with whether it is the current revision and its revision, the operation's id.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scopes<'a> {
    pub product: Option<&'a str>,
    pub api: Option<(&'a str, bool, u32)>,
    pub operation: Option<&'a str>,
}

pub(crate) type Compiled = Result<Arc<Document>, String>;

/// Maps looked up on every request, keyed by configuration ids (not chosen by clients), so a
/// fast hash rather than SipHash.
pub(super) type ById<T> = HashMap<String, T, foldhash::fast::RandomState>;

/// Every scope's policy document, compiled.
#[derive(Debug, Default)]
pub struct Policies {
    pub(super) global: Option<Compiled>,
    /// By product id.
    pub(super) products: ById<Compiled>,
    /// By the API's stored id (`echo`, `echo;rev=2`).
    pub(super) apis: ById<Compiled>,
    /// By `{api stored id}/{operation id}`.
    pub(super) operations: ById<Compiled>,
    pub(super) backends: HashMap<String, BackendInfo>,
    /// Pool backends' members, by pool id.
    pub(super) pools: HashMap<String, Vec<gatehouse_model::backend::PoolMember>>,
    /// Backends' circuit breaker rules, by backend id.
    pub(super) breakers: HashMap<String, gatehouse_model::backend::CircuitBreaker>,
    /// Logger resources' sinks (or why a logger has none), by logger id.
    pub(super) loggers: HashMap<String, Result<super::outside::Sink, String>>,
    /// OpenID configuration URLs of validate-jwt policies, whose keys the gateway keeps.
    pub openid_urls: Vec<String>,
    /// Policies that did not compile, by path: the message, and whether the scope still runs
    /// its previous document (a policy a gateway cannot run is never skipped: a scope with a
    /// previous document keeps it, one without answers 500 `PolicyNotCompiled`).
    pub failures: std::collections::BTreeMap<String, (String, bool)>,
}

pub(super) struct MirrorResolver<'a>(&'a ConfigMirror);

impl Resolver for MirrorResolver<'_> {
    fn named_value(&self, name: &str) -> Option<String> {
        let nv = self
            .0
            .get(Kind::NamedValue, &format!("/namedValues/{name}"))
            .or_else(|| {
                self.0
                    .of(Kind::NamedValue)
                    .find(|r| r.properties.get("displayName").and_then(Value::as_str) == Some(name))
            })?;
        Some(
            nv.properties
                .get("value")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        )
    }

    fn fragment(&self, id: &str) -> Option<(String, String)> {
        let f = self
            .0
            .get(Kind::PolicyFragment, &format!("/policyFragments/{id}"))?;
        let s = |k: &str| {
            f.properties
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        Some((s("value")?, s("format").unwrap_or_else(|| "xml".into())))
    }
}

/// Kinds whose change means the policies must be compiled again.
pub(crate) fn affects_policies(kind: Kind) -> bool {
    kind.is_policy()
        || matches!(
            kind,
            Kind::PolicyFragment | Kind::NamedValue | Kind::Backend | Kind::Logger
        )
}

pub(super) fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

impl Policies {
    pub fn compile(mirror: &ConfigMirror) -> Policies {
        let resolver = MirrorResolver(mirror);
        let mut p = Policies::default();
        for kind in POLICY_KINDS {
            for r in mirror.of(kind) {
                p.place(kind, &r.path, Some(compile_one(&resolver, r)));
            }
        }
        p.backends = backends(mirror);
        (p.pools, p.breakers) = pools_and_breakers(mirror);
        p.loggers = loggers(mirror);
        p.collect_openid_urls();
        p
    }

    /// The policies after `changes`: only the documents a change touches are compiled again —
    /// a changed policy; the policies naming a changed named value (`{{…}}`) or including a
    /// changed fragment — and backends are re-read only when one changed.
    pub fn next(&self, mirror: &ConfigMirror, changes: &[Change]) -> Policies {
        let resolver = MirrorResolver(mirror);
        let mut p = Policies {
            global: self.global.clone(),
            products: self.products.clone(),
            apis: self.apis.clone(),
            operations: self.operations.clone(),
            backends: self.backends.clone(),
            pools: self.pools.clone(),
            breakers: self.breakers.clone(),
            loggers: self.loggers.clone(),
            openid_urls: Vec::new(),
            failures: self.failures.clone(),
        };
        let mut named: Vec<String> = Vec::new();
        let mut fragments_changed = false;
        for c in changes {
            let r = c.new.as_ref().or(c.old.as_ref());
            match c.kind {
                k if k.is_policy() => {
                    let path = r.map(|r| r.path.as_str()).unwrap_or_default();
                    p.place(k, path, c.new.as_ref().map(|n| compile_one(&resolver, n)));
                }
                Kind::NamedValue => {
                    for res in [&c.old, &c.new].into_iter().flatten() {
                        named.push(res.name().to_string());
                        if let Some(d) = res.properties.get("displayName").and_then(Value::as_str) {
                            named.push(d.to_string());
                        }
                    }
                }
                Kind::PolicyFragment => fragments_changed = true,
                Kind::Backend => {
                    p.backends = backends(mirror);
                    (p.pools, p.breakers) = pools_and_breakers(mirror);
                }
                Kind::Logger => p.loggers = loggers(mirror),
                _ => {}
            }
        }
        if !named.is_empty() || fragments_changed {
            for kind in POLICY_KINDS {
                for r in mirror.of(kind) {
                    let value = r
                        .properties
                        .get("value")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    // Fragments may hold named values and other fragments: a policy including
                    // any fragment is compiled again whenever a fragment or named value changes.
                    let touched = value.contains("include-fragment")
                        || named
                            .iter()
                            .any(|n| value.contains(&format!("{{{{{n}}}}}")));
                    if touched {
                        p.place(kind, &r.path, Some(compile_one(&resolver, r)));
                    }
                }
            }
        }
        p.collect_openid_urls();
        p
    }

    pub(super) fn place(&mut self, kind: Kind, path: &str, compiled: Option<Compiled>) {
        let seg = segments(path);
        let slot = match (kind, seg.as_slice()) {
            (Kind::GlobalPolicy, _) => {
                let kept = keep_previous(&mut self.failures, path, self.global.as_ref(), compiled);
                self.global = kept;
                return;
            }
            (Kind::ProductPolicy, ["products", id, ..]) => (&mut self.products, id.to_string()),
            (Kind::ApiPolicy, ["apis", id, ..]) => (&mut self.apis, id.to_string()),
            (Kind::OperationPolicy, ["apis", api, "operations", op, ..]) => {
                (&mut self.operations, format!("{api}/{op}"))
            }
            _ => return,
        };
        let (map, key) = slot;
        let kept = keep_previous(&mut self.failures, path, map.get(&key), compiled);
        put(map, key, kept);
    }

    pub(super) fn collect_openid_urls(&mut self) {
        let docs = self
            .global
            .iter()
            .chain(self.products.values())
            .chain(self.apis.values())
            .chain(self.operations.values());
        let mut urls: Vec<String> = docs.flatten().flat_map(|d| d.openid_urls()).collect();
        urls.sort();
        urls.dedup();
        self.openid_urls = urls;
    }

    pub fn is_empty(&self) -> bool {
        self.global.is_none()
            && self.products.is_empty()
            && self.apis.is_empty()
            && self.operations.is_empty()
    }

    /// The chain of documents for a routed request, or the message of one that does not compile.
    pub fn chain(&self, scopes: &Scopes<'_>) -> Result<Chain<'_>, String> {
        let mut chain = Chain::default();
        fn pick(c: Option<&Compiled>) -> Result<Option<&Document>, String> {
            match c {
                None => Ok(None),
                Some(Ok(d)) => Ok(Some(d.as_ref())),
                Some(Err(e)) => Err(e.clone()),
            }
        }
        chain.levels[0] = pick(self.global.as_ref())?;
        if let Some(product) = scopes.product {
            chain.levels[1] = pick(self.products.get(product))?;
        }
        if let Some((api, is_current, revision)) = scopes.api {
            let stored = if is_current {
                std::borrow::Cow::Borrowed(api)
            } else {
                std::borrow::Cow::Owned(format!("{api};rev={revision}"))
            };
            chain.levels[2] = pick(self.apis.get(&*stored))?;
            // Most instances have no operation policies: no key to build then.
            if !self.operations.is_empty()
                && let Some(op) = scopes.operation
            {
                let mut key = String::with_capacity(stored.len() + 1 + op.len());
                key.push_str(&stored);
                key.push('/');
                key.push_str(op);
                chain.levels[3] = pick(self.operations.get(&key))?;
            }
        }
        Ok(chain)
    }
}

pub(super) const POLICY_KINDS: [Kind; 4] = [
    Kind::GlobalPolicy,
    Kind::ProductPolicy,
    Kind::ApiPolicy,
    Kind::OperationPolicy,
];

/// What a scope runs after its policy was compiled again: the new document; or, when it does
/// not compile and the scope ran a document before, that one — the failure recorded either way.
fn keep_previous(
    failures: &mut std::collections::BTreeMap<String, (String, bool)>,
    path: &str,
    previous: Option<&Compiled>,
    compiled: Option<Compiled>,
) -> Option<Compiled> {
    match (compiled, previous) {
        (Some(Err(e)), Some(Ok(doc))) => {
            failures.insert(path.to_string(), (e, true));
            Some(Ok(doc.clone()))
        }
        (Some(Err(e)), _) => {
            failures.insert(path.to_string(), (e.clone(), false));
            Some(Err(e))
        }
        (other, _) => {
            failures.remove(path);
            other
        }
    }
}

pub(super) fn put(map: &mut ById<Compiled>, key: String, compiled: Option<Compiled>) {
    match compiled {
        Some(c) => {
            map.insert(key, c);
        }
        None => {
            map.remove(&key);
        }
    }
}

pub(super) fn compile_one(
    resolver: &MirrorResolver<'_>,
    r: &gatehouse_model::StoredResource,
) -> Compiled {
    let value = r
        .properties
        .get("value")
        .and_then(Value::as_str)
        .unwrap_or("");
    let format = r
        .properties
        .get("format")
        .and_then(Value::as_str)
        .unwrap_or("xml");
    gatehouse_policy::parse_document(value, format, resolver)
        .map(Arc::new)
        .map_err(|e| {
            tracing::error!(policy = %r.path, error = %e, "a policy does not compile; its requests fail until it is fixed");
            format!("the policy {} does not compile: {e}", r.path)
        })
}

/// Pool backends' members and every backend's circuit breaker rule (the management API checked
/// them; one that no longer reads is left out and logged).
#[allow(clippy::type_complexity)]
pub(super) fn pools_and_breakers(
    mirror: &ConfigMirror,
) -> (
    HashMap<String, Vec<gatehouse_model::backend::PoolMember>>,
    HashMap<String, gatehouse_model::backend::CircuitBreaker>,
) {
    use gatehouse_model::backend;
    let (mut pools, mut breakers) = (HashMap::new(), HashMap::new());
    for b in mirror.of(Kind::Backend) {
        if backend::is_pool(&b.properties) {
            match backend::pool(&b.properties) {
                Ok(members) => {
                    pools.insert(b.name().to_string(), members);
                }
                Err(e) => {
                    tracing::error!(backend = %b.path, error = %e.message, "a pool backend does not read")
                }
            }
        }
        match backend::circuit_breaker(&b.properties) {
            Ok(Some(rule)) => {
                breakers.insert(b.name().to_string(), rule);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(backend = %b.path, error = %e.message, "a circuit breaker does not read")
            }
        }
    }
    (pools, breakers)
}

/// Each logger's sink: its `credentials.connectionString` as a `file://` or `http(s)://` URL.
pub(super) fn loggers(
    mirror: &ConfigMirror,
) -> HashMap<String, Result<super::outside::Sink, String>> {
    mirror
        .of(Kind::Logger)
        .map(|l| {
            let connection = l
                .properties
                .get("credentials")
                .and_then(|c| c.get("connectionString"))
                .and_then(Value::as_str)
                .unwrap_or("");
            (l.name().to_string(), super::outside::Sink::of(connection))
        })
        .collect()
}

pub(super) fn backends(mirror: &ConfigMirror) -> HashMap<String, BackendInfo> {
    let mut out = HashMap::new();
    for b in mirror.of(Kind::Backend) {
        let props = &b.properties;
        let creds = props.get("credentials");
        let pairs = |field: &str| -> Vec<(String, String)> {
            creds
                .and_then(|c| c.get(field))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .flat_map(|(k, v)| {
                            let vals: Vec<String> = match v {
                                Value::Array(a) => a
                                    .iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect(),
                                Value::String(s) => vec![s.clone()],
                                _ => Vec::new(),
                            };
                            vals.into_iter().map(move |x| (k.clone(), x))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let authorization = creds.and_then(|c| c.get("authorization")).and_then(|a| {
            Some((
                a.get("scheme")?.as_str()?.to_string(),
                a.get("parameter")?.as_str()?.to_string(),
            ))
        });
        out.insert(
            b.name().to_string(),
            BackendInfo {
                url: props
                    .get("url")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .trim_end_matches('/')
                    .to_string(),
                headers: pairs("header"),
                query: pairs("query"),
                authorization,
                entity: b.name().to_string(),
                unavailable: None,
                validate_chain: props
                    .get("tls")
                    .and_then(|t| t.get("validateCertificateChain"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
                validate_name: props
                    .get("tls")
                    .and_then(|t| t.get("validateCertificateName"))
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_model::StoredResource;
    use serde_json::json;

    fn res(kind: Kind, path: &str, props: Value) -> StoredResource {
        StoredResource {
            path: path.into(),
            kind,
            properties: props.as_object().cloned().unwrap_or_default(),
            revision: 1,
        }
    }

    fn policy(path: &str, header_value: &str) -> StoredResource {
        let kind = if path.starts_with("/policies") {
            Kind::GlobalPolicy
        } else {
            Kind::ApiPolicy
        };
        res(
            kind,
            path,
            json!({"format": "rawxml", "value": format!(r#"<policies><inbound><set-header name="x" exists-action="override"><value>{header_value}</value></set-header></inbound></policies>"#)}),
        )
    }

    #[test]
    fn a_policy_that_does_not_compile_keeps_the_previous_one_and_says_so() {
        let good = policy("/apis/a/policies/policy", "one");
        let mut mirror = ConfigMirror::new(1, None, [good.clone()]);
        let first = Policies::compile(&mirror);
        assert!(first.failures.is_empty());
        let broken = res(
            Kind::ApiPolicy,
            "/apis/a/policies/policy",
            json!({"format": "rawxml", "value": "<policies><inbound><no-such-policy /></inbound></policies>"}),
        );
        mirror.insert(broken.clone());
        let change = |old: &StoredResource, new: &StoredResource| Change {
            kind: Kind::ApiPolicy,
            old: Some(old.clone()),
            new: Some(new.clone()),
        };
        let second = first.next(&mirror, &[change(&good, &broken)]);
        assert!(Arc::ptr_eq(
            second.apis["a"].as_ref().unwrap(),
            first.apis["a"].as_ref().unwrap()
        ));
        let (error, kept) = &second.failures["/apis/a/policies/policy"];
        assert!(*kept && error.contains("no-such-policy"), "{error}");
        // Fixed: the failure goes.
        let fixed = policy("/apis/a/policies/policy", "two");
        mirror.insert(fixed.clone());
        let third = second.next(&mirror, &[change(&broken, &fixed)]);
        assert!(third.failures.is_empty());
        // With nothing to fall back on, the scope fails, and says so.
        let fresh = Policies::compile(&ConfigMirror::new(1, None, [broken]));
        assert!(fresh.apis["a"].is_err());
        assert!(!fresh.failures["/apis/a/policies/policy"].1);
    }

    #[test]
    fn a_change_recompiles_only_what_it_touches() {
        let nv = res(
            Kind::NamedValue,
            "/namedValues/greeting",
            json!({"displayName": "greeting", "value": "hello"}),
        );
        let a = policy("/apis/a/policies/policy", "{{greeting}}");
        let b = policy("/apis/b/policies/policy", "plain");
        let mut mirror = ConfigMirror::new(1, None, [nv.clone(), a.clone(), b.clone()]);
        let first = Policies::compile(&mirror);
        let doc = |p: &Policies, id: &str| p.apis[id].clone().unwrap();
        // A named value changes: the policy naming it is compiled again, the other kept as is.
        let nv2 = res(
            Kind::NamedValue,
            "/namedValues/greeting",
            json!({"displayName": "greeting", "value": "bonjour"}),
        );
        mirror.insert(nv2.clone());
        let second = first.next(
            &mirror,
            &[Change {
                kind: Kind::NamedValue,
                old: Some(nv),
                new: Some(nv2),
            }],
        );
        assert!(!Arc::ptr_eq(&doc(&first, "a"), &doc(&second, "a")));
        assert!(Arc::ptr_eq(&doc(&first, "b"), &doc(&second, "b")));
        assert!(format!("{:?}", doc(&second, "a")).contains("bonjour"));
        // A policy is deleted: only it goes.
        mirror.remove(Kind::ApiPolicy, &b.path);
        let third = second.next(
            &mirror,
            &[Change {
                kind: Kind::ApiPolicy,
                old: Some(b),
                new: None,
            }],
        );
        assert!(!third.apis.contains_key("b"));
        assert!(Arc::ptr_eq(&doc(&second, "a"), &doc(&third, "a")));
        // The same result as compiling everything.
        assert_eq!(
            format!("{:?}", Policies::compile(&mirror).apis["a"]),
            format!("{:?}", third.apis["a"])
        );
    }
}
