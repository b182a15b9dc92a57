//! Json.NET's `JToken` family on shared trees: reading (`Value<T>`, `SelectToken`, `Type`,
//! `Properties`), changing in place (`Add`, `Remove`, `Replace`, indexer assignment), and
//! writing (`ToString(Formatting)`). A `JProperty` is a pair of its name and its value's token.

use super::super::value::{EvalError, Host, Json, R, Seg, V, arg, fail, json_text, to_json};
use super::{cast, context, unknown};
use serde_json::Value as J;

pub fn token_type(v: &J) -> &'static str {
    match v {
        J::Object(_) => "Object",
        J::Array(_) => "Array",
        J::String(_) => "String",
        J::Bool(_) => "Boolean",
        J::Null => "Null",
        J::Number(n) if n.is_f64() => "Float",
        J::Number(_) => "Integer",
    }
}

/// A JSON value as the .NET value a `JValue` holds.
pub fn scalar(v: &J) -> V {
    match v {
        J::Null => V::Null,
        J::Bool(b) => V::Bool(*b),
        J::String(s) => V::Str(s.clone()),
        J::Number(n) => n
            .as_i64()
            .map(V::Int)
            .unwrap_or_else(|| V::Double(n.as_f64().unwrap_or(0.0))),
        other => V::json(other.clone()),
    }
}

pub fn member(j: &Json, name: &str) -> R {
    let v = j.get();
    // Objects the gateway gives as JSON (Jwt, BasicAuthCredentials, IResponse) have their
    // members as keys.
    if let Some(child) = v.get(name) {
        if matches!(name, "ExpirationTime" | "NotBefore" | "IssuedAt") {
            return Ok(child
                .as_str()
                .and_then(super::super::clock::parse)
                .map_or(V::Null, V::Time));
        }
        return Ok(V::Json(j.child(Seg::Key(name.to_string()))));
    }
    match name {
        "Type" => Ok(V::Enum("JTokenType", token_type(&v).into())),
        "HasValues" => Ok(V::Bool(match &v {
            J::Object(o) => !o.is_empty(),
            J::Array(a) => !a.is_empty(),
            _ => false,
        })),
        "Count" => match &v {
            J::Object(o) => Ok(V::Int(o.len() as i64)),
            J::Array(a) => Ok(V::Int(a.len() as i64)),
            _ => fail("Count is only on a JObject or a JArray"),
        },
        "First" | "Last" => {
            let items = V::Json(j.clone()).items().unwrap_or_default();
            let item = if name == "First" {
                items.first()
            } else {
                items.last()
            };
            Ok(item.cloned().unwrap_or(V::Null))
        }
        "Value" => Ok(scalar(&v)),
        "Root" => Ok(V::json(v)),
        n => fail(format!("JToken.{n} is not supported")),
    }
}

pub fn call(h: &mut dyn Host, j: &Json, name: &str, generic: Option<&str>, args: &[V]) -> R {
    let v = j.get();
    let key = || arg(args, 0, name).map(|k| k.text());
    match name {
        "ToString" => {
            let indented = !matches!(args.first(), Some(V::Enum(_, f)) if f == "None");
            Ok(V::Str(match (&v, indented) {
                (J::String(s), _) => s.clone(),
                (other, true) => json_text(other, true),
                (other, false) => other.to_string(),
            }))
        }
        "Value" => {
            let child = V::Json(j.child(Seg::Key(key()?)));
            match generic {
                Some(t) if child.is_null() => Ok(super::super::value::default_of(t)),
                Some(t) => cast(t, child),
                None => Ok(child),
            }
        }
        "GetValue" | "SelectToken" | "SelectTokens" if name != "GetValue" => {
            select(j, &key()?, name == "SelectTokens")
        }
        "GetValue" => {
            let k = key()?;
            let ic = matches!(args.get(1), Some(V::Comparison(true)));
            let found = v.as_object().and_then(|o| {
                o.keys()
                    .find(|x| {
                        if ic {
                            x.eq_ignore_ascii_case(&k)
                        } else {
                            **x == k
                        }
                    })
                    .cloned()
            });
            Ok(found.map_or(V::Null, |k| V::Json(j.child(Seg::Key(k)))))
        }
        "ContainsKey" => Ok(V::Bool(v.get(key()?).is_some())),
        "GetValueOrDefault" => {
            let k = key()?;
            Ok(match v.get(&k) {
                Some(J::Array(a)) => V::Str(
                    a.iter()
                        .map(|x| json_text(x, false))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Some(x) => V::Str(json_text(x, false)),
                None => args.get(1).cloned().unwrap_or(V::Null),
            })
        }
        "Property" => {
            let k = key()?;
            Ok(match v.get(&k) {
                Some(_) => V::pair(V::Str(k.clone()), V::Json(j.child(Seg::Key(k)))),
                None => V::Null,
            })
        }
        "Properties" => Ok(V::list(V::Json(j.clone()).items().unwrap_or_default())),
        "Children" | "Values" | "AsJEnumerable" => {
            Ok(V::list(V::Json(j.clone()).items().unwrap_or_default()))
        }
        "DeepClone" => Ok(V::json(v)),
        "ToObject" => to_object(j, generic.unwrap_or("object")),
        "As" => {
            let text = match v {
                J::String(s) => s,
                other => other.to_string(),
            };
            context::body_as(&text, generic.unwrap_or("string"))
        }
        "Add" | "AddFirst" => add(j, args, name == "AddFirst"),
        "Remove" if args.is_empty() => remove_self(j),
        "Remove" => {
            let k = key()?;
            Ok(V::Bool(j.with_mut(|x| {
                x.and_then(J::as_object_mut)
                    .and_then(|o| o.shift_remove(&k))
                    .is_some()
            })))
        }
        "RemoveAt" => {
            let i = super::super::value::int(&arg(args, 0, name)?).unwrap_or(-1);
            j.with_mut(|x| match x.and_then(J::as_array_mut) {
                Some(a) if i >= 0 && (i as usize) < a.len() => {
                    a.remove(i as usize);
                    Ok(V::Null)
                }
                _ => fail("RemoveAt: the index is outside the array"),
            })
        }
        "RemoveAll" | "Clear" => {
            j.with_mut(|x| match x {
                Some(J::Object(o)) => o.clear(),
                Some(J::Array(a)) => a.clear(),
                _ => {}
            });
            Ok(V::Null)
        }
        "Insert" => {
            let i = super::super::value::int(&arg(args, 0, name)?).unwrap_or(-1);
            let item = to_json(&arg(args, 1, name)?);
            j.with_mut(|x| match x.and_then(J::as_array_mut) {
                Some(a) if i >= 0 && (i as usize) <= a.len() => {
                    a.insert(i as usize, item);
                    Ok(V::Null)
                }
                _ => fail("Insert: the index is outside the array"),
            })
        }
        "Replace" | "ReplaceWith" => {
            let new = to_json(&arg(args, 0, name)?);
            j.with_mut(|x| x.map(|x| *x = new));
            Ok(V::Null)
        }
        "Merge" => {
            let other = to_json(&arg(args, 0, name)?);
            j.with_mut(|x| merge(x, other));
            Ok(V::Null)
        }
        "IndexOf" => {
            let item = to_json(&arg(args, 0, name)?);
            Ok(V::Int(
                v.as_array()
                    .and_then(|a| a.iter().position(|x| *x == item))
                    .map_or(-1, |p| p as i64),
            ))
        }
        _ => {
            let _ = h;
            unknown()
        }
    }
}

fn merge(x: Option<&mut J>, other: J) {
    match (x, other) {
        (Some(J::Object(a)), J::Object(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        merge(Some(existing), v)
                    }
                    _ => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (Some(J::Array(a)), J::Array(b)) => a.extend(b),
        _ => {}
    }
}

/// `JObject.Add(name, value)`, `JObject.Add(new JProperty(…))`, `JArray.Add(value)`.
fn add(j: &Json, args: &[V], first: bool) -> R {
    let (key, value) = match args {
        [V::Pair(p)] => (Some(p.0.text()), to_json(&p.1)),
        [k, v] => (Some(k.text()), to_json(v)),
        [v] => (None, to_json(v)),
        _ => return fail("Add needs a value, a JProperty, or a name and a value"),
    };
    j.with_mut(|x| match (x, key) {
        (Some(J::Array(a)), None) => {
            if first {
                a.insert(0, value);
            } else {
                a.push(value);
            }
            Ok(V::Null)
        }
        (Some(J::Object(o)), Some(k)) => {
            if o.contains_key(&k) {
                return fail(format!("Can not add property {k} to Newtonsoft.Json.Linq.JObject. Property with the same name already exists on object."));
            }
            if first {
                o.shift_insert(0, k, value);
            } else {
                o.insert(k, value);
            }
            Ok(V::Null)
        }
        (Some(J::Object(_)), None) => fail("a JObject takes a JProperty or a name and a value"),
        (Some(J::Array(_)), Some(_)) => match args {
            [V::Pair(_)] => fail("a JArray cannot take a JProperty"),
            _ => fail("JArray.Add takes one value"),
        },
        _ => fail("Add is only on a JObject or a JArray"),
    })
}

/// `token.Remove()`: takes the token out of its parent (through its path).
pub fn remove_self(j: &Json) -> R {
    let Some((parent, last)) = j.parent() else {
        return fail("the token has no parent to be removed from");
    };
    parent.with_mut(|x| match (x, last) {
        (Some(J::Object(o)), Seg::Key(k)) => {
            o.shift_remove(&k);
        }
        (Some(J::Array(a)), Seg::Idx(i)) if i < a.len() => {
            a.remove(i);
        }
        _ => {}
    });
    Ok(V::Null)
}

/// `ToObject<T>()`.
fn to_object(j: &Json, t: &str) -> R {
    let base = t.split('<').next().unwrap_or(t);
    match base {
        "Dictionary" | "IDictionary" => {
            let mut d = super::super::value::Dict::default();
            for item in V::Json(j.clone()).items().unwrap_or_default() {
                if let V::Pair(p) = item {
                    let value = if t.contains(",string>") || t.ends_with(",string>") {
                        V::Str(p.1.text())
                    } else {
                        p.1.clone()
                    };
                    d.insert(p.0.clone(), value);
                }
            }
            Ok(V::Dict(super::super::value::Shared::new(d)))
        }
        "List" | "IList" | "IEnumerable" => {
            let element = t
                .split_once('<')
                .map(|(_, r)| r.trim_end_matches('>'))
                .unwrap_or("object");
            let items = V::Json(j.clone()).items().unwrap_or_default();
            let items: Result<Vec<V>, EvalError> =
                items.into_iter().map(|i| cast(element, i)).collect();
            Ok(V::list(items?))
        }
        t if t.ends_with("[]") => to_object(j, &format!("List<{}>", t.trim_end_matches("[]"))),
        "object" => Ok(V::Json(j.clone())),
        t => cast(t, V::Json(j.clone())),
    }
}

/// `SelectToken(path)`: JSONPath as Json.NET reads it — `$`, `.name`, `['name']`, `[n]`,
/// `[*]`, `..name` (recursive).
fn select(j: &Json, path: &str, many: bool) -> R {
    let segs = parse_path(path)
        .ok_or_else(|| EvalError(format!("'{path}' is not a JSON path this gateway reads")))?;
    let mut current = vec![j.clone()];
    for seg in segs {
        let mut next = Vec::new();
        for c in &current {
            match &seg {
                PathSeg::Key(k) => next.push(c.child(Seg::Key(k.clone()))),
                PathSeg::Idx(i) => next.push(c.child(Seg::Idx(*i))),
                PathSeg::All => {
                    for item in V::Json(c.clone()).items().unwrap_or_default() {
                        match item {
                            V::Json(x) => next.push(x),
                            V::Pair(p) => {
                                if let V::Json(x) = &p.1 {
                                    next.push(x.clone())
                                }
                            }
                            _ => {}
                        }
                    }
                }
                PathSeg::Deep(k) => descend(c, k, &mut next, 0),
            }
        }
        current = next
            .into_iter()
            .filter(|x| x.with(|v| v.is_some()))
            .collect();
    }
    if many {
        return Ok(V::list(current.into_iter().map(V::Json).collect()));
    }
    match current.len() {
        0 => Ok(V::Null),
        1 => Ok(V::Json(current.remove(0))),
        _ => fail("Path returned multiple tokens."),
    }
}

fn descend(j: &Json, key: &str, out: &mut Vec<Json>, depth: usize) {
    if depth > 128 {
        return;
    }
    let v = j.get();
    match &v {
        J::Object(o) => {
            for k in o.keys() {
                let child = j.child(Seg::Key(k.clone()));
                if k == key {
                    out.push(child.clone());
                }
                descend(&child, key, out, depth + 1);
            }
        }
        J::Array(a) => {
            for i in 0..a.len() {
                descend(&j.child(Seg::Idx(i)), key, out, depth + 1);
            }
        }
        _ => {}
    }
}

enum PathSeg {
    Key(String),
    Idx(usize),
    All,
    Deep(String),
}

fn parse_path(path: &str) -> Option<Vec<PathSeg>> {
    let mut out = Vec::new();
    let p = path.trim();
    let mut rest = p.strip_prefix('$').unwrap_or(p);
    let ident_end = |s: &str| s.find(['.', '[']).unwrap_or(s.len());
    if !rest.is_empty() && !rest.starts_with('.') && !rest.starts_with('[') {
        let e = ident_end(rest);
        out.push(PathSeg::Key(rest[..e].to_string()));
        rest = &rest[e..];
    }
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("..") {
            let e = ident_end(r);
            out.push(PathSeg::Deep(r[..e].to_string()));
            rest = &r[e..];
        } else if let Some(r) = rest.strip_prefix('.') {
            let e = ident_end(r);
            if &r[..e] == "*" {
                out.push(PathSeg::All);
            } else {
                out.push(PathSeg::Key(r[..e].to_string()));
            }
            rest = &r[e..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            let inner = r[..close].trim();
            if inner == "*" {
                out.push(PathSeg::All);
            } else if let Some(q) = inner.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')) {
                out.push(PathSeg::Key(q.to_string()));
            } else {
                out.push(PathSeg::Idx(inner.parse().ok()?));
            }
            rest = &r[close + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

/// `token[key] = value`.
pub fn set(j: &Json, key: &V, value: V) -> Result<(), EvalError> {
    let new = to_json(&value);
    j.with_mut(|x| match (x, key) {
        (Some(J::Object(o)), k) => {
            o.insert(k.text(), new);
            Ok(())
        }
        (Some(J::Array(a)), V::Int(i)) if *i >= 0 && (*i as usize) < a.len() => {
            a[*i as usize] = new;
            Ok(())
        }
        (Some(J::Array(_)), _) => fail("the index is outside the JArray"),
        (None | Some(J::Null), _) => {
            fail("Object reference not set to an instance of an object (the token is null)")
        }
        (Some(other), _) => fail(format!(
            "cannot set a child of a JValue ({})",
            token_type(other)
        )),
    })
}
