//! Arrays, `List<T>`, `Dictionary<K,V>`, `HashSet<T>` and `byte[]`: members, methods and
//! indexers. Every growth is bounded by [`check_len`].

use super::super::value::{Dict, EvalError, Host, R, Shared, V, arg, check_len, equal, fail, int};
use super::unknown;

pub fn member(t: &V, name: &str) -> R {
    match (t, name) {
        (V::List(l) | V::Set(l), "Length" | "Count") => Ok(V::Int(l.lock().len() as i64)),
        (V::Bytes(b), "Length" | "Count") => Ok(V::Int(b.lock().len() as i64)),
        (V::Dict(d), "Count") => Ok(V::Int(d.lock().entries.len() as i64)),
        (V::Dict(d), "Keys") => Ok(V::list(
            d.lock().entries.iter().map(|e| e.0.clone()).collect(),
        )),
        (V::Dict(d), "Values") => Ok(V::list(
            d.lock().entries.iter().map(|e| e.1.clone()).collect(),
        )),
        (V::List(_), "Rank") => Ok(V::Int(1)),
        (t, n) => fail(format!("{}.{n} is not supported", t.type_name())),
    }
}

pub fn index(t: &V, i: &V) -> R {
    match t {
        V::List(l) => {
            let l = l.lock();
            let n = int(i).ok_or_else(|| EvalError("an array index must be a number".into()))?;
            usize::try_from(n)
                .ok()
                .and_then(|n| l.get(n).cloned())
                .ok_or_else(|| {
                    EvalError(format!(
                        "Index was outside the bounds of the array (index {n}, length {}).",
                        l.len()
                    ))
                })
        }
        V::Bytes(b) => {
            let b = b.lock();
            let n = int(i).ok_or_else(|| EvalError("an array index must be a number".into()))?;
            usize::try_from(n)
                .ok()
                .and_then(|n| b.get(n).map(|x| V::Int(*x as i64)))
                .ok_or_else(|| {
                    EvalError(format!(
                        "Index was outside the bounds of the array (index {n}, length {}).",
                        b.len()
                    ))
                })
        }
        V::Str(s) => {
            let n = int(i).ok_or_else(|| EvalError("a string index must be a number".into()))?;
            usize::try_from(n)
                .ok()
                .and_then(|n| s.chars().nth(n))
                .map(|c| V::Str(c.to_string()))
                .ok_or_else(|| {
                    EvalError(format!(
                        "Index was outside the bounds of the string (index {n})."
                    ))
                })
        }
        V::Dict(d) => d.lock().get(i).ok_or_else(|| {
            EvalError(format!(
                "The given key '{}' was not present in the dictionary.",
                i.text()
            ))
        }),
        other => fail(format!("{} cannot be indexed", other.type_name())),
    }
}

pub fn set_index(t: &V, i: &V, v: V) -> Result<(), EvalError> {
    match t {
        V::List(l) => {
            let mut l = l.lock();
            let len = l.len();
            match int(i)
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| l.get_mut(n))
            {
                Some(slot) => {
                    *slot = v;
                    Ok(())
                }
                None => fail(format!(
                    "Index was outside the bounds of the array (length {len})."
                )),
            }
        }
        V::Bytes(b) => {
            let mut b = b.lock();
            let byte = int(&v)
                .and_then(|x| u8::try_from(x).ok())
                .ok_or_else(|| EvalError("a byte is a number from 0 to 255".into()))?;
            match int(i)
                .and_then(|n| usize::try_from(n).ok())
                .and_then(|n| b.get_mut(n))
            {
                Some(slot) => {
                    *slot = byte;
                    Ok(())
                }
                None => fail("Index was outside the bounds of the array."),
            }
        }
        V::Dict(d) => {
            let mut d = d.lock();
            check_len(d.entries.len() + 1)?;
            d.insert(i.clone(), v);
            Ok(())
        }
        other => fail(format!("{} cannot be assigned by index", other.type_name())),
    }
}

pub fn call(h: &mut dyn Host, t: &V, name: &str, args: &[V]) -> R {
    match t {
        V::List(l) => list_call(h, l, name, args),
        V::Set(s) => set_call(h, s, name, args),
        V::Dict(d) => dict_call(d, name, args),
        V::Bytes(b) => match name {
            "ToString" => Ok(V::Str(t.text())),
            "Clone" => Ok(V::bytes(b.lock().clone())),
            "CopyTo" => {
                let src = b.lock().clone();
                copy_into(
                    &src,
                    &arg(args, 0, name)?,
                    args.get(1).and_then(int).unwrap_or(0),
                )
            }
            _ => unknown(),
        },
        _ => unknown(),
    }
}

fn copy_into(src: &[u8], dest: &V, at: i64) -> R {
    let V::Bytes(d) = dest else {
        return fail("CopyTo needs a byte[]");
    };
    let mut d = d.lock();
    let at = usize::try_from(at).map_err(|_| EvalError("a negative index".into()))?;
    if at + src.len() > d.len() {
        return fail("Destination array was not long enough.");
    }
    d[at..at + src.len()].copy_from_slice(src);
    Ok(V::Null)
}

fn list_call(h: &mut dyn Host, l: &Shared<Vec<V>>, name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match name {
        "Add" => {
            let x = a0()?;
            let mut l = l.lock();
            check_len(l.len() + 1)?;
            l.push(x);
            Ok(V::Null)
        }
        "AddRange" => {
            let more = super::enumerate(h.env(), a0()?)?;
            let mut l = l.lock();
            check_len(l.len() + more.len())?;
            l.extend(more);
            Ok(V::Null)
        }
        "Insert" => {
            let i = int(&a0()?).unwrap_or(-1);
            let x = arg(args, 1, name)?;
            let mut l = l.lock();
            if i < 0 || i as usize > l.len() {
                return fail("Insert: the index is outside the list");
            }
            l.insert(i as usize, x);
            Ok(V::Null)
        }
        "Remove" => {
            let x = a0()?;
            let mut l = l.lock();
            Ok(V::Bool(match l.iter().position(|v| equal(v, &x)) {
                Some(p) => {
                    l.remove(p);
                    true
                }
                None => false,
            }))
        }
        "RemoveAt" => {
            let i = int(&a0()?).unwrap_or(-1);
            let mut l = l.lock();
            if i < 0 || i as usize >= l.len() {
                return fail("RemoveAt: the index is outside the list");
            }
            l.remove(i as usize);
            Ok(V::Null)
        }
        "RemoveAll" => {
            let f = a0()?;
            let items = l.lock().clone();
            let mut keep = Vec::new();
            let mut removed = 0;
            for x in items {
                if h.invoke(&f, vec![x.clone()])?.truthy()? {
                    removed += 1;
                } else {
                    keep.push(x);
                }
            }
            *l.lock() = keep;
            Ok(V::Int(removed))
        }
        "Clear" => {
            l.lock().clear();
            Ok(V::Null)
        }
        "IndexOf" => {
            let x = a0()?;
            Ok(V::Int(
                l.lock()
                    .iter()
                    .position(|v| equal(v, &x))
                    .map_or(-1, |p| p as i64),
            ))
        }
        "Sort" => {
            let mut items = l.lock().clone();
            items.sort_by(super::linq::order);
            *l.lock() = items;
            Ok(V::Null)
        }
        // List<T>.Reverse() reverses in place; arrays' (LINQ) Reverse() gives a reversed
        // sequence. Both are served: the list is reversed and returned.
        "Reverse" if args.is_empty() => {
            l.lock().reverse();
            Ok(V::List(l.clone()))
        }
        "ForEach" => {
            let f = a0()?;
            let items = l.lock().clone();
            for x in items {
                h.invoke(&f, vec![x])?;
            }
            Ok(V::Null)
        }
        "Find" | "FindAll" | "FindIndex" | "Exists" | "TrueForAll" => {
            let f = a0()?;
            let items = l.lock().clone();
            let mut hits = Vec::new();
            for (i, x) in items.iter().enumerate() {
                if h.invoke(&f, vec![x.clone()])?.truthy()? {
                    hits.push(i);
                }
            }
            Ok(match name {
                "Find" => hits.first().map_or(V::Null, |i| items[*i].clone()),
                "FindAll" => V::list(hits.iter().map(|i| items[*i].clone()).collect()),
                "FindIndex" => V::Int(hits.first().map_or(-1, |i| *i as i64)),
                "Exists" => V::Bool(!hits.is_empty()),
                _ => V::Bool(hits.len() == items.len()),
            })
        }
        "Clone" => Ok(V::list(l.lock().clone())),
        "ToString" => Ok(V::Str(V::List(l.clone()).text())),
        _ => unknown(),
    }
}

fn set_call(h: &mut dyn Host, s: &Shared<Vec<V>>, name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match name {
        "Add" => {
            let x = a0()?;
            let mut s = s.lock();
            if s.iter().any(|v| equal(v, &x)) {
                return Ok(V::Bool(false));
            }
            check_len(s.len() + 1)?;
            s.push(x);
            Ok(V::Bool(true))
        }
        "Remove" => {
            let x = a0()?;
            let mut s = s.lock();
            let before = s.len();
            s.retain(|v| !equal(v, &x));
            Ok(V::Bool(s.len() != before))
        }
        "Clear" => {
            s.lock().clear();
            Ok(V::Null)
        }
        "UnionWith" | "IntersectWith" | "ExceptWith" => {
            let other = super::enumerate(h.env(), a0()?)?;
            let mut s = s.lock();
            match name {
                "UnionWith" => {
                    for x in other {
                        if !s.iter().any(|v| equal(v, &x)) {
                            s.push(x);
                        }
                    }
                }
                "IntersectWith" => s.retain(|v| other.iter().any(|o| equal(v, o))),
                _ => s.retain(|v| !other.iter().any(|o| equal(v, o))),
            }
            check_len(s.len())?;
            Ok(V::Null)
        }
        "IsSubsetOf" | "IsSupersetOf" | "Overlaps" | "SetEquals" => {
            let other = super::enumerate(h.env(), a0()?)?;
            let s = s.lock();
            let in_other = |v: &V| other.iter().any(|o| equal(v, o));
            let in_self = |v: &V| s.iter().any(|o| equal(v, o));
            Ok(V::Bool(match name {
                "IsSubsetOf" => s.iter().all(in_other),
                "IsSupersetOf" => other.iter().all(in_self),
                "Overlaps" => s.iter().any(in_other),
                _ => s.iter().all(in_other) && other.iter().all(in_self),
            }))
        }
        _ => unknown(),
    }
}

fn dict_call(d: &Shared<Dict>, name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match name {
        "Add" | "TryAdd" => {
            let (k, v) = match args {
                [V::Pair(p)] => (p.0.clone(), p.1.clone()),
                _ => (a0()?, arg(args, 1, name)?),
            };
            let mut d = d.lock();
            if d.position(&k).is_some() {
                if name == "TryAdd" {
                    return Ok(V::Bool(false));
                }
                return fail(format!(
                    "An item with the same key has already been added. Key: {}",
                    k.text()
                ));
            }
            check_len(d.entries.len() + 1)?;
            d.entries.push((k, v));
            Ok(V::Bool(true))
        }
        "ContainsKey" => Ok(V::Bool(d.lock().position(&a0()?).is_some())),
        "ContainsValue" => {
            let x = a0()?;
            Ok(V::Bool(d.lock().entries.iter().any(|e| equal(&e.1, &x))))
        }
        "Remove" => {
            let k = a0()?;
            let mut d = d.lock();
            Ok(V::Bool(match d.position(&k) {
                Some(p) => {
                    d.entries.remove(p);
                    true
                }
                None => false,
            }))
        }
        "GetValueOrDefault" => Ok(d
            .lock()
            .get(&a0()?)
            .unwrap_or_else(|| args.get(1).cloned().unwrap_or(V::Null))),
        // APIM's extensions on AsFormUrlEncodedContent()'s dictionary.
        "ToFormUrlEncodedContent" | "ToQueryString" => {
            let mut out = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &d.lock().entries {
                match v.items().filter(|_| !matches!(v, V::Str(_))) {
                    Some(values) => {
                        for x in values {
                            out.append_pair(&k.text(), &x.text());
                        }
                    }
                    None => {
                        out.append_pair(&k.text(), &v.text());
                    }
                }
            }
            Ok(V::Str(out.finish()))
        }
        "Clear" => {
            d.lock().entries.clear();
            Ok(V::Null)
        }
        _ => unknown(),
    }
}
