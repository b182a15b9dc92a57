//! cache-lookup and cache-store (responses), cache-lookup-value, cache-store-value and
//! cache-remove-value (values), in the gateway's in-memory cache.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Cached, Exchange, Flow};
use crate::expr::Text;
use crate::node::{At, Num, Policy, Run};
use crate::position::Section;

/// cache-lookup: a GET answered from the cache, or its key kept for cache-store.
#[derive(Debug)]
pub struct CacheLookup {
    pub vary_by_developer: bool,
    pub vary_by_groups: bool,
    pub headers: Vec<String>,
    pub query: Vec<String>,
}

pub fn parse_cache_lookup<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(
        node,
        &[
            "vary-by-developer",
            "vary-by-developer-groups",
            "caching-type",
            "downstream-caching-type",
            "must-revalidate",
            "allow-private-response-caching",
        ],
    )?;
    if cx
        .literal(node, "caching-type")?
        .is_some_and(|t| t == "external")
    {
        return cx.err(
            node,
            "caching-type=\"external\" is not supported: Gatehouse caches in memory (internal)",
        );
    }
    let mut lookup = CacheLookup {
        vary_by_developer: cx.boolean(node, "vary-by-developer", false)?,
        vary_by_groups: cx.boolean(node, "vary-by-developer-groups", false)?,
        headers: Vec::new(),
        query: Vec::new(),
    };
    for c in cx.children(node)? {
        match c.tag_name().name() {
            "vary-by-header" => lookup.headers.push(cx.element_text(c)),
            "vary-by-query-parameter" => lookup.query.push(cx.element_text(c)),
            other => return cx.err(c, format!("<cache-lookup> has no element <{other}>")),
        }
    }
    Ok(Box::new(lookup))
}

impl Policy for CacheLookup {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        if ex.method != "GET" {
            return Run::Done(Flow::Next);
        }
        let key = self.key(ex);
        if let Some(Cached::Response(r)) = at.svc.cache_get(&key) {
            ex.response = Some(r);
            return Run::Done(Flow::Respond);
        }
        ex.cache_key = Some(key);
        Run::Done(Flow::Next)
    }
}

impl CacheLookup {
    /// The response's key: API, operation, backend path, and what the lookup varies by.
    fn key(&self, ex: &Exchange) -> String {
        use std::fmt::Write;
        let info = |k: &str| ex.info.get(k).map(|v| v.text()).unwrap_or_default();
        let mut key = format!(
            "response|{}|{}|{}",
            info("Api.Id"),
            info("Operation.Id"),
            ex.backend_path
        );
        for q in &self.query {
            let values: Vec<&str> = ex
                .query
                .iter()
                .filter(|(k, _)| k == q)
                .map(|(_, v)| v.as_str())
                .collect();
            let _ = write!(key, "|q:{q}={}", values.join(","));
        }
        for h in &self.headers {
            let value = ex.header(h).unwrap_or("");
            let _ = write!(key, "|h:{}={value}", h.to_ascii_lowercase());
        }
        if self.vary_by_developer {
            let _ = write!(key, "|u:{}", info("User.Id"));
        }
        if self.vary_by_groups {
            let _ = write!(key, "|g:{}", info("User.Groups"));
        }
        key
    }
}

/// cache-store: a 200 response with a body, under the key cache-lookup found.
#[derive(Debug)]
pub struct CacheStore {
    pub duration_secs: Num,
}

pub fn parse_cache_store<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Outbound])?;
    cx.check_attrs(node, &["duration", "cache-response"])?;
    cx.reads_body = true;
    Ok(Box::new(CacheStore {
        duration_secs: cx.number_or_expr(node, "duration", Some(3600), 365 * 86_400)?,
    }))
}

impl Policy for CacheStore {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        if let (Some(key), Some(r)) = (&ex.cache_key, &ex.response)
            && r.status == 200
            && r.body.is_some()
        {
            let secs = match at.number(&self.duration_secs, ex) {
                Ok(s) => s,
                Err(flow) => return Run::Done(flow),
            };
            at.svc.cache_put(key, Cached::Response(r.clone()), secs);
        }
        Run::Done(Flow::Next)
    }
}

/// The cache key of a value.
fn value_key(key: &str) -> String {
    format!("value|{key}")
}

/// cache-lookup-value: a cached value (or the default) into a variable.
#[derive(Debug)]
pub struct CacheLookupValue {
    pub key: Text,
    pub variable: String,
    pub default: Option<Text>,
}

pub fn parse_cache_lookup_value<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(
        node,
        &["key", "default-value", "variable-name", "caching-type"],
    )?;
    Ok(Box::new(CacheLookupValue {
        variable: cx.name_attr(node, "variable-name")?,
        key: cx.required(node, "key")?,
        default: cx.attr_text(node, "default-value")?,
    }))
}

impl Policy for CacheLookupValue {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

impl CacheLookupValue {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let key = at.text(&self.key, ex)?;
        let value = match at.svc.cache_get(&value_key(&key)) {
            Some(Cached::Value(v)) => Some(v),
            _ => match &self.default {
                Some(d) => Some(at.value(d, ex)?),
                None => None,
            },
        };
        if let Some(v) = value {
            ex.variables.insert(self.variable.clone(), v);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct CacheStoreValue {
    pub key: Text,
    pub value: Text,
    pub duration_secs: Num,
}

pub fn parse_cache_store_value<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["key", "value", "duration", "caching-type"])?;
    Ok(Box::new(CacheStoreValue {
        key: cx.required(node, "key")?,
        value: cx.required(node, "value")?,
        duration_secs: cx.number_or_expr(node, "duration", None, 365 * 86_400)?,
    }))
}

impl Policy for CacheStoreValue {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

impl CacheStoreValue {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let key = at.text(&self.key, ex)?;
        let value = at.value(&self.value, ex)?;
        let secs = at.number(&self.duration_secs, ex)?;
        at.svc
            .cache_put(&value_key(&key), Cached::Value(value), secs);
        Ok(())
    }
}

#[derive(Debug)]
pub struct CacheRemoveValue {
    pub key: Text,
}

pub fn parse_cache_remove_value<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["key", "caching-type"])?;
    Ok(Box::new(CacheRemoveValue {
        key: cx.required(node, "key")?,
    }))
}

impl Policy for CacheRemoveValue {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        match at.text(&self.key, ex) {
            Ok(key) => {
                at.svc.cache_remove(&value_key(&key));
                Run::Done(Flow::Next)
            }
            Err(flow) => Run::Done(flow),
        }
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::expr::V;
    use crate::position::Section;
    use crate::testing::{Fake, get, inbound, run_section};

    #[test]
    fn values_are_stored_looked_up_and_removed() {
        let svc = Fake::default();
        let lookup =
            inbound(r#"<cache-lookup-value key="k" variable-name="v" default-value="none" />"#);
        let value = |svc: &Fake| {
            let mut ex = get(&[]);
            run_section(&lookup, Section::Inbound, &mut ex, svc);
            ex.variables.get("v").cloned()
        };
        assert_eq!(value(&svc), Some(V::Str("none".into())));
        let store = inbound(r#"<cache-store-value key="k" value="@(6 * 7)" duration="60" />"#);
        run_section(&store, Section::Inbound, &mut get(&[]), &svc);
        assert_eq!(value(&svc), Some(V::Int(42)));
        run_section(
            &inbound(r#"<cache-remove-value key="k" />"#),
            Section::Inbound,
            &mut get(&[]),
            &svc,
        );
        assert_eq!(value(&svc), Some(V::Str("none".into())));
    }
}
