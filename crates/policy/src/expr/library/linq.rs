//! `System.Linq.Enumerable` over anything enumerable (arrays, lists, dictionaries, JSON
//! arrays and objects, strings, the context's maps). Sequences are materialised: policy data is
//! small, and every result is bounded by [`check_len`].

use super::super::value::{
    Dict, EvalError, Host, R, Shared, V, arg, check_len, equal, fail, int, num,
};
use std::cmp::Ordering;

pub fn has(name: &str) -> bool {
    super::super::types::LINQ.contains(&name)
}

fn func(args: &[V], n: usize) -> Option<&V> {
    args.get(n).filter(|a| a.type_name() == "Func")
}

fn apply(h: &mut dyn Host, f: Option<&V>, x: &V) -> R {
    match f {
        Some(f) => h.invoke(f, vec![x.clone()]),
        None => Ok(x.clone()),
    }
}

fn test(h: &mut dyn Host, f: &V, x: &V) -> Result<bool, EvalError> {
    h.invoke(f, vec![x.clone()])?.truthy()
}

fn filtered(h: &mut dyn Host, items: Vec<V>, f: Option<&V>) -> Result<Vec<V>, EvalError> {
    let Some(f) = f else {
        return Ok(items);
    };
    let mut out = Vec::new();
    for x in items {
        if test(h, f, &x)? {
            out.push(x);
        }
    }
    Ok(out)
}

/// Ordering for OrderBy, Min and Max: numbers, times, then text (ordinal).
pub fn order(a: &V, b: &V) -> Ordering {
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => match (a, b) {
            (V::Time(x), V::Time(y)) => x.cmp(y),
            (V::Span(x), V::Span(y)) => x.cmp(y),
            (V::Null, V::Null) => Ordering::Equal,
            (V::Null, _) => Ordering::Less,
            (_, V::Null) => Ordering::Greater,
            _ => a.text().cmp(&b.text()),
        },
    }
}

fn index_arg(args: &[V], n: usize, name: &str) -> Result<i64, EvalError> {
    int(&arg(args, n, name)?).ok_or_else(|| EvalError(format!("{name} needs a number")))
}

fn distinct(items: Vec<V>) -> Vec<V> {
    let mut out: Vec<V> = Vec::new();
    for x in items {
        if !out.iter().any(|y| equal(&x, y)) {
            out.push(x);
        }
    }
    out
}

pub fn call(h: &mut dyn Host, items: Vec<V>, name: &str, generic: Option<&str>, args: &[V]) -> R {
    let f0 = func(args, 0).cloned();
    let one = |found: Option<V>, or_default: bool, what: &str| match found {
        Some(v) => Ok(v),
        None if or_default => Ok(V::Null),
        None => fail(format!("Sequence contains no {what}")),
    };
    match name {
        "Select" => {
            let f = f0.ok_or_else(|| EvalError("Select needs a function".into()))?;
            let mut out = Vec::with_capacity(items.len());
            for (i, x) in items.iter().enumerate() {
                let args = if lambda_arity(&f) == 2 {
                    vec![x.clone(), V::Int(i as i64)]
                } else {
                    vec![x.clone()]
                };
                out.push(h.invoke(&f, args)?);
            }
            Ok(V::list(out))
        }
        "SelectMany" => {
            let mut out = Vec::new();
            for x in &items {
                let inner = apply(h, f0.as_ref(), x)?;
                out.extend(super::enumerate(h.env(), inner)?);
                check_len(out.len())?;
            }
            Ok(V::list(out))
        }
        "Where" => Ok(V::list(filtered(h, items, f0.as_ref())?)),
        "Any" => Ok(V::Bool(match &f0 {
            None => !items.is_empty(),
            Some(f) => {
                let mut any = false;
                for x in &items {
                    if test(h, f, x)? {
                        any = true;
                        break;
                    }
                }
                any
            }
        })),
        "All" => {
            let f = f0.ok_or_else(|| EvalError("All needs a function".into()))?;
            for x in &items {
                if !test(h, &f, x)? {
                    return Ok(V::Bool(false));
                }
            }
            Ok(V::Bool(true))
        }
        "First" | "FirstOrDefault" => {
            let found = filtered(h, items, f0.as_ref())?.into_iter().next();
            one(found, name.ends_with("OrDefault"), "matching element")
        }
        "Last" | "LastOrDefault" => {
            let found = filtered(h, items, f0.as_ref())?.pop();
            one(found, name.ends_with("OrDefault"), "matching element")
        }
        "Single" | "SingleOrDefault" => {
            let mut found = filtered(h, items, f0.as_ref())?;
            if found.len() > 1 {
                return fail("Sequence contains more than one matching element");
            }
            one(found.pop(), name.ends_with("OrDefault"), "matching element")
        }
        "Count" | "LongCount" => Ok(V::Int(filtered(h, items, f0.as_ref())?.len() as i64)),
        "Sum" | "Average" => {
            let mut values = Vec::new();
            for x in &items {
                values.push(apply(h, f0.as_ref(), x)?);
            }
            let all_int = values
                .iter()
                .all(|v| matches!(v, V::Int(_)) || int(v).is_some() && !matches!(v, V::Double(_)));
            if name == "Sum" && all_int {
                let mut s: i64 = 0;
                for v in &values {
                    s = s
                        .checked_add(int(v).unwrap_or(0))
                        .ok_or_else(|| EvalError("arithmetic overflow in Sum".into()))?;
                }
                return Ok(V::Int(s));
            }
            let total: f64 = values.iter().map(|v| num(v).unwrap_or(0.0)).sum();
            if name == "Average" {
                if values.is_empty() {
                    return fail("Sequence contains no elements");
                }
                return Ok(V::Double(total / values.len() as f64));
            }
            Ok(V::Double(total))
        }
        "Min" | "Max" => {
            let mut values = Vec::new();
            for x in &items {
                values.push(apply(h, f0.as_ref(), x)?);
            }
            let pick = if name == "Min" {
                values.into_iter().min_by(order)
            } else {
                values.into_iter().max_by(order)
            };
            one(pick, false, "elements")
        }
        "OrderBy" | "OrderByDescending" | "ThenBy" | "ThenByDescending" => {
            let mut keyed = Vec::with_capacity(items.len());
            for x in items {
                keyed.push((apply(h, f0.as_ref(), &x)?, x));
            }
            keyed.sort_by(|a, b| order(&a.0, &b.0));
            if name.ends_with("Descending") {
                keyed.reverse();
            }
            Ok(V::list(keyed.into_iter().map(|(_, x)| x).collect()))
        }
        "Skip" | "Take" => {
            let n = index_arg(args, 0, name)?.max(0) as usize;
            Ok(V::list(if name == "Skip" {
                items.into_iter().skip(n).collect()
            } else {
                items.into_iter().take(n).collect()
            }))
        }
        "SkipWhile" | "TakeWhile" => {
            let f = f0.ok_or_else(|| EvalError(format!("{name} needs a function")))?;
            let mut cut = items.len();
            for (i, x) in items.iter().enumerate() {
                if !test(h, &f, x)? {
                    cut = i;
                    break;
                }
            }
            let (a, b) = items.split_at(cut);
            Ok(V::list(if name == "TakeWhile" {
                a.to_vec()
            } else {
                b.to_vec()
            }))
        }
        "ToArray" | "ToList" | "AsEnumerable" | "Cast" => {
            let items = match generic {
                Some(t) if name == "Cast" => items
                    .into_iter()
                    .map(|x| super::cast(t, x))
                    .collect::<Result<_, _>>()?,
                _ => items,
            };
            Ok(V::list(items))
        }
        "OfType" => {
            let t = generic.unwrap_or("object");
            Ok(V::list(
                items.into_iter().filter(|x| super::is_type(x, t)).collect(),
            ))
        }
        "ToHashSet" => Ok(V::Set(Shared::new(distinct(items)))),
        "ToDictionary" | "ToLookup" => {
            let key = f0.ok_or_else(|| EvalError(format!("{name} needs a key function")))?;
            let value = func(args, 1).cloned();
            let mut d = Dict::default();
            for x in &items {
                let k = h.invoke(&key, vec![x.clone()])?;
                let v = apply(h, value.as_ref(), x)?;
                if name == "ToDictionary" && d.position(&k).is_some() {
                    return fail(format!(
                        "An item with the same key has already been added. Key: {}",
                        k.text()
                    ));
                }
                d.insert(k, v);
            }
            Ok(V::Dict(Shared::new(d)))
        }
        "Contains" => {
            let x = arg(args, 0, name)?;
            let ic = args
                .iter()
                .any(|a| matches!(a, V::Comparison(true)) || a.type_name() == "StringComparer");
            Ok(V::Bool(items.iter().any(|v| {
                if ic {
                    v.text().eq_ignore_ascii_case(&x.text())
                } else {
                    equal(v, &x)
                }
            })))
        }
        "Aggregate" => {
            let (mut acc, f, start) = match (func(args, 0), func(args, 1)) {
                (Some(f), _) => {
                    let Some(first) = items.first().cloned() else {
                        return fail("Sequence contains no elements");
                    };
                    (first, f.clone(), 1)
                }
                (None, Some(f)) => (arg(args, 0, name)?, f.clone(), 0),
                _ => return fail("Aggregate needs a function"),
            };
            for x in items.into_iter().skip(start) {
                acc = h.invoke(&f, vec![acc, x])?;
            }
            match func(args, 2) {
                Some(result) => h.invoke(result, vec![acc]),
                None => Ok(acc),
            }
        }
        "Concat" | "Union" | "Intersect" | "Except" => {
            let other = super::enumerate(h.env(), arg(args, 0, name)?)?;
            check_len(items.len() + other.len())?;
            Ok(V::list(match name {
                "Concat" => items.into_iter().chain(other).collect(),
                "Union" => distinct(items.into_iter().chain(other).collect()),
                "Intersect" => distinct(
                    items
                        .into_iter()
                        .filter(|x| other.iter().any(|y| equal(x, y)))
                        .collect(),
                ),
                _ => distinct(
                    items
                        .into_iter()
                        .filter(|x| !other.iter().any(|y| equal(x, y)))
                        .collect(),
                ),
            }))
        }
        "Distinct" => Ok(V::list(distinct(items))),
        "Reverse" => Ok(V::list(items.into_iter().rev().collect())),
        "Append" | "Prepend" => {
            let x = arg(args, 0, name)?;
            let mut items = items;
            if name == "Append" {
                items.push(x)
            } else {
                items.insert(0, x)
            }
            Ok(V::list(items))
        }
        "ElementAt" | "ElementAtOrDefault" => {
            let i = index_arg(args, 0, name)?;
            let found = usize::try_from(i).ok().and_then(|i| items.get(i).cloned());
            match found {
                Some(v) => Ok(v),
                None if name.ends_with("OrDefault") => Ok(V::Null),
                None => fail(format!("Index was out of range: {i}")),
            }
        }
        "DefaultIfEmpty" => Ok(V::list(if items.is_empty() {
            vec![args.first().cloned().unwrap_or(V::Null)]
        } else {
            items
        })),
        "SequenceEqual" => {
            let other = super::enumerate(h.env(), arg(args, 0, name)?)?;
            Ok(V::Bool(
                items.len() == other.len() && items.iter().zip(&other).all(|(a, b)| equal(a, b)),
            ))
        }
        "Zip" => {
            let other = super::enumerate(h.env(), arg(args, 0, name)?)?;
            let f = func(args, 1).cloned();
            let mut out = Vec::new();
            for (a, b) in items.into_iter().zip(other) {
                out.push(match &f {
                    Some(f) => h.invoke(f, vec![a, b])?,
                    None => V::pair(a, b),
                });
            }
            Ok(V::list(out))
        }
        "GroupBy" => {
            let key = f0.ok_or_else(|| EvalError("GroupBy needs a key function".into()))?;
            let mut groups: Vec<(V, Vec<V>)> = Vec::new();
            for x in items {
                let k = h.invoke(&key, vec![x.clone()])?;
                match groups.iter_mut().find(|g| equal(&g.0, &k)) {
                    Some(g) => g.1.push(x),
                    None => groups.push((k, vec![x])),
                }
            }
            // A group is a pair of its key and its items: `g.Key`, and LINQ over `g.Value`.
            Ok(V::list(
                groups
                    .into_iter()
                    .map(|(k, xs)| V::pair(k, V::list(xs)))
                    .collect(),
            ))
        }
        n => fail(format!("{n} is not supported")),
    }
}

fn lambda_arity(f: &V) -> usize {
    match f {
        V::Native(n) => match &**n {
            super::super::value::Native::Function(l) => l.params.len(),
            _ => 1,
        },
        _ => 1,
    }
}
