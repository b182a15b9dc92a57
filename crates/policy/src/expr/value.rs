//! Runtime values of policy expressions.
//!
//! .NET's reference types keep reference semantics: a `JObject` taken out of a body and changed
//! through a `foreach` variable changes the body, a `StringBuilder` appended through a chain
//! appends to one builder. They are shared cells (`Arc<Mutex<…>>`, so a value can be kept in
//! `context.Variables` across the gateway's awaits); a JSON token is its tree's root and a path
//! into it. Locks are held only inside one value operation, never across a call back into the
//! interpreter, so no evaluation can deadlock on its own values.

use super::xtree::XElem;
use base64::Engine;
use std::sync::{Arc, Mutex, MutexGuard};

/// A failure while evaluating: APIM reports it as `ExpressionValueEvaluationFailure`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

pub type R = Result<V, EvalError>;

pub fn fail<T>(m: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(m.into()))
}

/// The `n`th argument of a call.
pub fn arg(args: &[V], n: usize, method: &str) -> R {
    args.get(n)
        .cloned()
        .ok_or_else(|| EvalError(format!("{method} needs {} argument(s)", n + 1)))
}

/// What an expression can read of the request being served. The gateway implements it.
pub trait Env {
    /// The context value at a dotted path (`Request.Method`): a leaf value, or `V::Ctx(path)`
    /// for an object whose members are read further.
    fn member(&self, path: &str) -> Result<V, EvalError>;
    /// An entry of a context map (`Request.Headers`, `Request.Url.Query`, `Variables`,
    /// `Request.MatchedParameters`, `Response.Headers`) by key; headers as a list of values.
    fn lookup(&self, map: &str, key: &str) -> Option<V>;
    /// The body of `Request` or `Response`, as text.
    fn body(&self, message: &str) -> Result<String, EvalError>;
    /// Every entry of a context map, for enumerating it (`foreach`, `Keys`, LINQ).
    fn entries(&self, _map: &str) -> Vec<(String, V)> {
        Vec::new()
    }
}

/// What the library calls back into: the request's context, and running a lambda
/// (`Where(x => …)`) with arguments.
pub trait Host {
    fn invoke(&mut self, f: &V, args: Vec<V>) -> R;
    fn env(&self) -> &dyn Env;
}

/// The longest string, byte array or list an expression may build.
pub const MAX_LEN: usize = 16 << 20;

pub fn check_len(n: usize) -> Result<(), EvalError> {
    if n > MAX_LEN {
        return fail(format!(
            "a value of {n} items or characters is larger than expressions may build ({MAX_LEN})"
        ));
    }
    Ok(())
}

/// A cell shared between every name that refers to one .NET object.
#[derive(Debug, Default)]
pub struct Shared<T>(Arc<Mutex<T>>);

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T> Shared<T> {
    pub fn new(v: T) -> Shared<T> {
        Shared(Arc::new(Mutex::new(v)))
    }

    /// The object, locked. Nothing panics while holding it, so a poisoned lock still holds a
    /// consistent value and is taken over.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn same(&self, other: &Shared<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T: Clone> Shared<T> {
    pub fn snapshot(&self) -> T {
        self.lock().clone()
    }
}

/// One step of a path into a JSON tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Seg {
    Key(String),
    Idx(usize),
}

/// A JSON token: a tree shared by every token taken from it, and where in it this one is.
#[derive(Debug, Clone)]
pub struct Json {
    root: Shared<serde_json::Value>,
    path: Vec<Seg>,
}

impl Json {
    pub fn new(v: serde_json::Value) -> Json {
        Json {
            root: Shared::new(v),
            path: Vec::new(),
        }
    }

    /// The token at `seg` below this one (it need not exist yet: reading gives null).
    pub fn child(&self, seg: Seg) -> Json {
        let mut path = self.path.clone();
        path.push(seg);
        Json {
            root: self.root.clone(),
            path,
        }
    }

    /// Reads the token (`None` when its place no longer exists).
    pub fn with<R>(&self, f: impl FnOnce(Option<&serde_json::Value>) -> R) -> R {
        let root = self.root.lock();
        let mut at = Some(&*root);
        for seg in &self.path {
            at = at.and_then(|v| match seg {
                Seg::Key(k) => v.get(k),
                Seg::Idx(i) => v.get(*i),
            });
        }
        f(at)
    }

    /// Changes the token in place (`None` when its place no longer exists).
    pub fn with_mut<R>(&self, f: impl FnOnce(Option<&mut serde_json::Value>) -> R) -> R {
        let mut root = self.root.lock();
        let mut at = Some(&mut *root);
        for seg in &self.path {
            at = at.and_then(|v| match seg {
                Seg::Key(k) => v.get_mut(k),
                Seg::Idx(i) => v.get_mut(*i),
            });
        }
        f(at)
    }

    /// A copy of the token's value.
    pub fn get(&self) -> serde_json::Value {
        self.with(|v| v.cloned().unwrap_or_default())
    }

    pub fn same(&self, other: &Json) -> bool {
        self.root.same(&other.root) && self.path == other.path
    }

    /// The token this one is in, and this one's place in it.
    pub fn parent(&self) -> Option<(Json, Seg)> {
        let mut path = self.path.clone();
        let last = path.pop()?;
        Some((
            Json {
                root: self.root.clone(),
                path,
            },
            last,
        ))
    }
}

/// An element of a shared XML tree: the document (path empty, `doc` true) or an element in it.
#[derive(Debug, Clone)]
pub struct Xml {
    pub root: Shared<XElem>,
    /// Child indexes from the root element down.
    pub path: Vec<usize>,
    /// Whether this is the `XDocument` around the root element.
    pub doc: bool,
}

impl Xml {
    pub fn element(e: XElem) -> Xml {
        Xml {
            root: Shared::new(e),
            path: Vec::new(),
            doc: false,
        }
    }

    pub fn with<R>(&self, f: impl FnOnce(Option<&XElem>) -> R) -> R {
        let root = self.root.lock();
        let mut at = Some(&*root);
        for i in &self.path {
            at = at.and_then(|e| match e.children.get(*i) {
                Some(super::xtree::XNode::Element(c)) => Some(c),
                _ => None,
            });
        }
        f(at)
    }

    pub fn with_mut<R>(&self, f: impl FnOnce(Option<&mut XElem>) -> R) -> R {
        let mut root = self.root.lock();
        let mut at = Some(&mut *root);
        for i in &self.path {
            at = at.and_then(|e| match e.children.get_mut(*i) {
                Some(super::xtree::XNode::Element(c)) => Some(c),
                _ => None,
            });
        }
        f(at)
    }

    pub fn child(&self, i: usize) -> Xml {
        let mut path = self.path.clone();
        path.push(i);
        Xml {
            root: self.root.clone(),
            path,
            doc: false,
        }
    }
}

/// Objects without an identity of their own worth sharing: read-only once made.
#[derive(Debug)]
pub enum Native {
    Regex(Arc<regex::Regex>),
    /// A regular expression match: its groups, by number then name.
    Match {
        groups: Vec<Option<(usize, String)>>,
        names: Vec<Option<String>>,
        /// The input and where the search for the next match starts (`NextMatch`).
        input: Arc<str>,
        next: usize,
        regex: Arc<regex::Regex>,
    },
    /// One group of a match: where it starts (in characters) and its text; `None` when the
    /// group did not take part.
    Group(Option<(usize, String)>),
    Uri(url::Url),
    Exception {
        kind: String,
        message: String,
    },
    /// `XNamespace`: `ns + "local"` is an expanded name.
    Namespace(String),
    XAttribute(String, String),
    Encoding(&'static str),
    /// A lambda or local function: its parameters' slots and body (the interpreter's).
    Function(Arc<super::ast::Lambda>),
}

/// Objects that change in place.
#[derive(Debug)]
pub enum Obj {
    Builder(String),
    Random(u64),
    Queue(std::collections::VecDeque<V>),
    Stack(Vec<V>),
    UriBuilder(url::Url),
    /// A keyed or plain hash algorithm (`HMACSHA256`, `SHA256`, `MD5`, …) and its key (which
    /// `new HMACSHA256 { Key = k }` sets).
    Hash {
        algorithm: String,
        key: Option<Vec<u8>>,
    },
}

/// A `Dictionary<K, V>`: insertion-ordered entries (policy dictionaries are small, so a scan
/// beats hashing), keys compared as the comparer says.
#[derive(Debug, Clone, Default)]
pub struct Dict {
    pub entries: Vec<(V, V)>,
    pub ignore_case: bool,
}

impl Dict {
    pub fn position(&self, key: &V) -> Option<usize> {
        self.entries.iter().position(|(k, _)| {
            if self.ignore_case {
                k.text().eq_ignore_ascii_case(&key.text())
            } else {
                equal(k, key)
            }
        })
    }

    pub fn get(&self, key: &V) -> Option<V> {
        self.position(key).map(|i| self.entries[i].1.clone())
    }

    pub fn insert(&mut self, key: V, value: V) {
        match self.position(&key) {
            Some(i) => self.entries[i].1 = value,
            None => self.entries.push((key, value)),
        }
    }
}

/// A runtime value.
#[derive(Debug, Clone)]
pub enum V {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Bytes(Shared<Vec<u8>>),
    /// Arrays, `List<T>` and the results of LINQ operators.
    List(Shared<Vec<V>>),
    Dict(Shared<Dict>),
    Set(Shared<Vec<V>>),
    /// `KeyValuePair`, `JProperty` (name, value) and two-item tuples.
    Pair(Arc<(V, V)>),
    Json(Json),
    Xml(Xml),
    /// A DateTime (or DateTimeOffset), UTC.
    Time(time::OffsetDateTime),
    /// A TimeSpan.
    Span(time::Duration),
    /// An object of the policy context, by its dotted path (`Request.Headers`).
    Ctx(String),
    /// A static type (`string`, `DateTime`, …) whose members are being reached.
    Type(String),
    /// A `StringComparison` value: true for a case-insensitive comparison.
    Comparison(bool),
    /// Other enumeration values (`Formatting.Indented`, `RegexOptions.IgnoreCase`, …).
    Enum(&'static str, String),
    Native(Arc<Native>),
    Obj(Shared<Obj>),
}

impl PartialEq for V {
    fn eq(&self, other: &V) -> bool {
        match (self, other) {
            (V::Double(a), V::Double(b)) => a == b,
            (V::Str(a), V::Str(b)) => a == b,
            (V::List(a), V::List(b)) => a.same(b) || *a.lock() == *b.lock(),
            (V::Bytes(a), V::Bytes(b)) => a.same(b) || *a.lock() == *b.lock(),
            (V::Json(a), V::Json(b)) => a.same(b) || a.get() == b.get(),
            (V::Ctx(a), V::Ctx(b)) | (V::Type(a), V::Type(b)) => a == b,
            _ => equal(self, other),
        }
    }
}

impl V {
    pub fn str(s: impl Into<String>) -> V {
        V::Str(s.into())
    }

    pub fn list(items: Vec<V>) -> V {
        V::List(Shared::new(items))
    }

    pub fn bytes(b: Vec<u8>) -> V {
        V::Bytes(Shared::new(b))
    }

    pub fn json(j: serde_json::Value) -> V {
        V::Json(Json::new(j))
    }

    pub fn native(n: Native) -> V {
        V::Native(Arc::new(n))
    }

    pub fn pair(a: V, b: V) -> V {
        V::Pair(Arc::new((a, b)))
    }

    pub fn is_null(&self) -> bool {
        match self {
            V::Null => true,
            V::Json(j) => j.with(|v| matches!(v, None | Some(serde_json::Value::Null))),
            _ => false,
        }
    }

    pub fn truthy(&self) -> Result<bool, EvalError> {
        match self {
            V::Bool(b) => Ok(*b),
            V::Json(j) => match j.get() {
                serde_json::Value::Bool(b) => Ok(b),
                _ => Err(EvalError("the JToken is not a bool".into())),
            },
            other => Err(EvalError(format!("{} is not a bool", other.type_name()))),
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            V::Null => "null",
            V::Bool(_) => "bool",
            V::Int(_) => "int",
            V::Double(_) => "double",
            V::Str(_) => "string",
            V::Bytes(_) => "byte[]",
            V::List(_) => "array",
            V::Dict(_) => "Dictionary",
            V::Set(_) => "HashSet",
            V::Pair(_) => "KeyValuePair",
            V::Json(_) => "JToken",
            V::Xml(x) if x.doc => "XDocument",
            V::Xml(_) => "XElement",
            V::Time(_) => "DateTime",
            V::Span(_) => "TimeSpan",
            V::Ctx(_) => "context object",
            V::Type(_) => "type",
            V::Comparison(_) => "StringComparison",
            V::Enum(t, _) => t,
            V::Native(n) => match **n {
                Native::Regex(_) => "Regex",
                Native::Match { .. } => "Match",
                Native::Group(_) => "Group",
                Native::Uri(_) => "Uri",
                Native::Exception { .. } => "Exception",
                Native::Namespace(_) => "XNamespace",
                Native::XAttribute(..) => "XAttribute",
                Native::Encoding(_) => "Encoding",
                Native::Function(_) => "Func",
            },
            V::Obj(o) => match *o.lock() {
                Obj::Builder(_) => "StringBuilder",
                Obj::Random(_) => "Random",
                Obj::Queue(_) => "Queue",
                Obj::Stack(_) => "Stack",
                Obj::UriBuilder(_) => "UriBuilder",
                Obj::Hash { .. } => "HashAlgorithm",
            },
        }
    }

    /// The value as text, as C#'s `ToString()` would give it.
    pub fn text(&self) -> String {
        match self {
            V::Null => String::new(),
            V::Bool(b) => if *b { "True" } else { "False" }.into(),
            V::Int(n) => n.to_string(),
            V::Double(d) => double_text(*d),
            V::Str(s) => s.clone(),
            V::Bytes(_) => "System.Byte[]".into(),
            V::List(_) => "System.Collections.Generic.List`1[System.Object]".into(),
            V::Dict(_) => "System.Collections.Generic.Dictionary`2".into(),
            V::Set(_) => "System.Collections.Generic.HashSet`1".into(),
            V::Pair(p) => format!("[{}, {}]", p.0.text(), p.1.text()),
            V::Json(j) => json_text(&j.get(), true),
            V::Xml(x) => x.with(|e| e.map(|e| super::xtree::write(e, true)).unwrap_or_default()),
            V::Time(t) => super::clock::format(*t, "G"),
            V::Span(d) => super::clock::span_text(*d),
            V::Ctx(p) => p.clone(),
            V::Type(t) => t.clone(),
            V::Comparison(_) => "StringComparison".into(),
            V::Enum(_, v) => v.clone(),
            V::Native(n) => match &**n {
                Native::Regex(r) => r.as_str().to_string(),
                Native::Match { groups, .. } => groups
                    .first()
                    .and_then(|g| g.as_ref().map(|g| g.1.clone()))
                    .unwrap_or_default(),
                Native::Group(g) => g.as_ref().map(|g| g.1.clone()).unwrap_or_default(),
                Native::Uri(u) => u.to_string(),
                Native::Exception { kind, message } => format!("System.{kind}: {message}"),
                Native::Namespace(n) => n.clone(),
                Native::XAttribute(n, v) => format!("{n}=\"{v}\""),
                Native::Encoding(e) => e.to_string(),
                Native::Function(_) => "System.Func".into(),
            },
            V::Obj(o) => match &*o.lock() {
                Obj::Builder(s) => s.clone(),
                Obj::Random(_) => "System.Random".into(),
                Obj::Queue(_) => "System.Collections.Generic.Queue`1".into(),
                Obj::Stack(_) => "System.Collections.Generic.Stack`1".into(),
                Obj::UriBuilder(u) => u.to_string(),
                Obj::Hash { algorithm, .. } => algorithm.clone(),
            },
        }
    }

    /// The items of an enumerable value, if it is one.
    pub fn items(&self) -> Option<Vec<V>> {
        Some(match self {
            V::List(l) | V::Set(l) => l.lock().clone(),
            V::Bytes(b) => b.lock().iter().map(|x| V::Int(*x as i64)).collect(),
            V::Dict(d) => d
                .lock()
                .entries
                .iter()
                .map(|(k, v)| V::pair(k.clone(), v.clone()))
                .collect(),
            V::Str(s) => s.chars().map(|c| V::Str(c.to_string())).collect(),
            // A group of GroupBy: its key and its items.
            V::Pair(p) if matches!(p.1, V::List(_)) => return p.1.items(),
            V::Json(j) => j.with(|v| match v {
                Some(serde_json::Value::Array(a)) => (0..a.len())
                    .map(|i| V::Json(j.child(Seg::Idx(i))))
                    .collect(),
                Some(serde_json::Value::Object(o)) => o
                    .keys()
                    .map(|k| V::pair(V::Str(k.clone()), V::Json(j.child(Seg::Key(k.clone())))))
                    .collect(),
                _ => Vec::new(),
            }),
            V::Obj(o) => match &*o.lock() {
                Obj::Queue(q) => q.iter().cloned().collect(),
                Obj::Stack(s) => s.iter().rev().cloned().collect(),
                _ => return None,
            },
            _ => return None,
        })
    }
}

/// A double as .NET prints it: integral values without a fraction, `E` notation past 1e15.
pub fn double_text(d: f64) -> String {
    if d.is_nan() {
        return "NaN".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "∞" } else { "-∞" }.into();
    }
    if d.fract() == 0.0 && d.abs() < 1e15 {
        return format!("{}", d as i64);
    }
    let s = format!("{d}");
    if s.len() > 17 {
        format!("{d:.15}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        s
    }
}

/// A JSON token as `JToken.ToString()` writes it: indented (two spaces) unless `compact`
/// is asked for; a string value is its text.
pub fn json_text(v: &serde_json::Value, indented: bool) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        serde_json::Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        other if indented && (other.is_object() || other.is_array()) => {
            serde_json::to_string_pretty(other).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

pub fn num(v: &V) -> Option<f64> {
    match v {
        V::Int(n) => Some(*n as f64),
        V::Double(d) => Some(*d),
        V::Json(j) => j.with(|v| v.and_then(serde_json::Value::as_f64)),
        _ => None,
    }
}

pub fn int(v: &V) -> Option<i64> {
    match v {
        V::Int(n) => Some(*n),
        V::Json(j) => j.with(|v| v.and_then(serde_json::Value::as_i64)),
        _ => None,
    }
}

/// Equality as C#'s `==` and `Equals` see it for the values expressions meet.
pub fn equal(a: &V, b: &V) -> bool {
    if a.is_null() || b.is_null() {
        return a.is_null() && b.is_null();
    }
    match (a, b) {
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Time(x), V::Time(y)) => x == y,
        (V::Span(x), V::Span(y)) => x == y,
        (V::List(x), V::List(y)) | (V::Set(x), V::Set(y)) => x.same(y),
        (V::Dict(x), V::Dict(y)) => x.same(y),
        (V::Obj(x), V::Obj(y)) => x.same(y),
        (V::Native(x), V::Native(y)) => Arc::ptr_eq(x, y) || a.text() == b.text(),
        (V::Pair(x), V::Pair(y)) => equal(&x.0, &y.0) && equal(&x.1, &y.1),
        (V::Enum(t, x), V::Enum(u, y)) => t == u && x == y,
        (V::Comparison(x), V::Comparison(y)) => x == y,
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => match (a, b) {
                (V::Json(x), V::Json(y)) if x.get().is_object() || x.get().is_array() => x.same(y),
                (V::Json(x), _) | (_, V::Json(x))
                    if x.with(|v| matches!(v, Some(serde_json::Value::Bool(_)))) =>
                {
                    a.truthy().ok() == b.truthy().ok()
                }
                _ => a.text() == b.text(),
            },
        },
    }
}

/// The value as a JSON value (what `JsonConvert.SerializeObject` and `JToken.FromObject`
/// write; bytes as base64, as Json.NET writes them).
pub fn to_json(v: &V) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        V::Null => J::Null,
        V::Bool(b) => J::Bool(*b),
        V::Int(n) => J::from(*n),
        V::Double(d) => serde_json::Number::from_f64(*d).map_or(J::Null, J::Number),
        V::Str(s) => J::String(s.clone()),
        V::Bytes(b) => J::String(base64::engine::general_purpose::STANDARD.encode(&*b.lock())),
        V::List(l) | V::Set(l) => J::Array(l.lock().iter().map(to_json).collect()),
        V::Dict(d) => J::Object(
            d.lock()
                .entries
                .iter()
                .map(|(k, v)| (k.text(), to_json(v)))
                .collect(),
        ),
        V::Pair(p) => serde_json::json!({ "Key": to_json(&p.0), "Value": to_json(&p.1) }),
        V::Json(j) => j.get(),
        V::Time(t) => J::String(super::clock::format(*t, "yyyy-MM-ddTHH:mm:ssK")),
        V::Span(_) | V::Xml(_) | V::Enum(..) | V::Native(_) | V::Obj(_) => J::String(v.text()),
        V::Ctx(_) | V::Type(_) | V::Comparison(_) => J::String(v.text()),
    }
}

fn base(t: &str) -> &str {
    t.split('<').next().unwrap_or(t).trim_end_matches('?')
}

/// The value a variable of type `t` holds before it is assigned.
pub fn default_of(t: &str) -> V {
    match base(t) {
        _ if t.ends_with('?') => V::Null,
        "int" | "Int32" | "long" | "Int64" | "short" | "byte" | "uint" | "ulong" | "Int16"
        | "Byte" | "UInt32" | "UInt64" | "sbyte" | "ushort" => V::Int(0),
        "double" | "Double" | "float" | "decimal" | "Decimal" | "Single" => V::Double(0.0),
        "bool" | "Boolean" => V::Bool(false),
        "DateTime" | "DateTimeOffset" => {
            V::Time(super::clock::from_ticks(0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH))
        }
        "TimeSpan" => V::Span(time::Duration::ZERO),
        "Guid" => V::Str("00000000-0000-0000-0000-000000000000".into()),
        _ => V::Null,
    }
}
