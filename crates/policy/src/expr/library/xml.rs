//! LINQ to XML (`XDocument`, `XElement`, `XAttribute`) on shared trees: navigation by name
//! (`Element`, `Elements`, `Descendants`, `Attribute`), values, and changes in place.
//! Names are expanded (`{namespace}local`), as `XNamespace + "local"` makes them.

use super::super::value::{EvalError, Native, R, V, Xml, arg, fail, to_json};
use super::super::xtree::{self, XElem, XNode};
use super::unknown;

pub fn member(x: &Xml, name: &str) -> R {
    if x.doc {
        return match name {
            "Root" => Ok(V::Xml(root(x))),
            "Declaration" => Ok(V::Null),
            n => fail(format!("XDocument.{n} is not supported")),
        };
    }
    x.with(|e| {
        let Some(e) = e else {
            return fail("the element was removed from its document");
        };
        Ok(match name {
            "Value" => V::Str(e.value()),
            "Name" => V::Str(e.name.clone()),
            "HasElements" => V::Bool(e.elements().next().is_some()),
            "HasAttributes" => V::Bool(e.attrs.iter().any(|(n, _)| !is_declaration(n))),
            "IsEmpty" => V::Bool(e.children.is_empty()),
            "NodeType" => V::Enum("XmlNodeType", "Element".into()),
            "Parent" => match x.path.split_last() {
                Some((_, up)) => V::Xml(Xml {
                    root: x.root.clone(),
                    path: up.to_vec(),
                    doc: false,
                }),
                None => V::Null,
            },
            "FirstNode" | "LastNode" => {
                let i = if name == "FirstNode" {
                    e.elements().next()
                } else {
                    e.elements().last()
                };
                i.map_or(V::Null, |(i, _)| V::Xml(x.child(i)))
            }
            n => return fail(format!("XElement.{n} is not supported")),
        })
    })
}

fn root(x: &Xml) -> Xml {
    Xml {
        root: x.root.clone(),
        path: Vec::new(),
        doc: false,
    }
}

fn is_declaration(n: &str) -> bool {
    n == "xmlns" || n.starts_with("{http://www.w3.org/2000/xmlns/}")
}

/// Children (or, deep, descendants) named `name` (all when `None`), as elements of the tree.
fn find(x: &Xml, name: Option<&str>, deep: bool, out: &mut Vec<Xml>) {
    let children: Vec<(usize, bool)> = x.with(|e| {
        e.map(|e| {
            e.elements()
                .map(|(i, c)| (i, name.is_none_or(|n| c.name == n)))
                .collect()
        })
        .unwrap_or_default()
    });
    for (i, hit) in children {
        let child = x.child(i);
        if hit {
            out.push(child.clone());
        }
        if deep && out.len() < super::super::value::MAX_LEN && child.path.len() < 256 {
            find(&child, name, true, out);
        }
    }
}

fn name_arg(args: &[V]) -> Option<String> {
    args.first().filter(|a| !a.is_null()).map(V::text)
}

pub fn call(x: &Xml, name: &str, args: &[V]) -> R {
    let target = if x.doc
        && !matches!(
            name,
            "ToString" | "Descendants" | "Elements" | "Element" | "Nodes"
        ) {
        root(x)
    } else {
        x.clone()
    };
    let x = &target;
    let list = |v: Vec<Xml>| Ok(V::list(v.into_iter().map(V::Xml).collect()));
    match name {
        "ToString" => {
            let indent = !matches!(args.first(), Some(V::Enum(_, o)) if o == "DisableFormatting");
            Ok(V::Str(x.with(|e| {
                e.map(|e| xtree::write(e, indent)).unwrap_or_default()
            })))
        }
        "Element" | "Elements" | "Descendants" | "DescendantsAndSelf" if x.doc => {
            let r = root(x);
            let n = name_arg(args);
            let mut out = Vec::new();
            if r.with(|e| e.is_some_and(|e| n.as_deref().is_none_or(|n| e.name == n))) {
                out.push(r.clone());
            }
            if name.starts_with("Descendants") {
                find(&r, n.as_deref(), true, &mut out);
            }
            if name == "Element" {
                return Ok(out.into_iter().next().map_or(V::Null, V::Xml));
            }
            list(out)
        }
        "Element" => {
            let mut out = Vec::new();
            find(x, Some(&arg(args, 0, name)?.text()), false, &mut out);
            Ok(out.into_iter().next().map_or(V::Null, V::Xml))
        }
        "Elements" | "Nodes" => {
            let mut out = Vec::new();
            find(x, name_arg(args).as_deref(), false, &mut out);
            list(out)
        }
        "Descendants" | "DescendantsAndSelf" => {
            let mut out = Vec::new();
            let n = name_arg(args);
            if name == "DescendantsAndSelf"
                && x.with(|e| e.is_some_and(|e| n.as_deref().is_none_or(|n| e.name == n)))
            {
                out.push(x.clone());
            }
            find(x, n.as_deref(), true, &mut out);
            list(out)
        }
        "Attribute" => {
            let n = arg(args, 0, name)?.text();
            Ok(x.with(|e| {
                e.and_then(|e| {
                    e.attribute(&n)
                        .map(|v| V::native(Native::XAttribute(n.clone(), v.to_string())))
                })
            })
            .unwrap_or(V::Null))
        }
        "Attributes" => Ok(V::list(x.with(|e| {
            e.map(|e| {
                e.attrs
                    .iter()
                    .filter(|(n, _)| !is_declaration(n))
                    .map(|(n, v)| V::native(Native::XAttribute(n.clone(), v.clone())))
                    .collect()
            })
            .unwrap_or_default()
        }))),
        "SetValue" => {
            let text = arg(args, 0, name)?.text();
            x.with_mut(|e| e.map(|e| e.children = vec![XNode::Text(text)]));
            Ok(V::Null)
        }
        "SetAttributeValue" => {
            let n = arg(args, 0, name)?.text();
            let v = arg(args, 1, name)?;
            let v = (!v.is_null()).then(|| v.text());
            x.with_mut(|e| e.map(|e| e.set_attribute(&n, v)));
            Ok(V::Null)
        }
        "SetElementValue" => {
            let n = arg(args, 0, name)?.text();
            let v = arg(args, 1, name)?;
            x.with_mut(|e| {
                let Some(e) = e else { return };
                let at = e
                    .children
                    .iter()
                    .position(|c| matches!(c, XNode::Element(c) if c.name == n));
                match (at, v.is_null()) {
                    (Some(i), true) => {
                        e.children.remove(i);
                    }
                    (Some(i), false) => {
                        if let XNode::Element(c) = &mut e.children[i] {
                            c.children = vec![XNode::Text(v.text())];
                        }
                    }
                    (None, false) => {
                        let mut c = XElem::new(n.clone());
                        c.children.push(XNode::Text(v.text()));
                        e.children.push(XNode::Element(c));
                    }
                    (None, true) => {}
                }
            });
            Ok(V::Null)
        }
        "Add" | "AddFirst" | "ReplaceNodes" | "ReplaceAll" => {
            let mut nodes = Vec::new();
            let mut attrs = Vec::new();
            for a in args {
                content(a, &mut nodes, &mut attrs)?;
            }
            x.with_mut(|e| {
                let Some(e) = e else { return };
                if name.starts_with("Replace") {
                    e.children.clear();
                }
                if name == "ReplaceAll" {
                    e.attrs.retain(|(n, _)| is_declaration(n));
                }
                if name == "AddFirst" {
                    e.children.splice(0..0, nodes);
                } else {
                    e.children.extend(nodes);
                }
                for (n, v) in attrs {
                    e.set_attribute(&n, Some(v));
                }
            });
            Ok(V::Null)
        }
        "Remove" => {
            let Some((last, up)) = x.path.split_last() else {
                return fail("the root element cannot be removed");
            };
            let parent = Xml {
                root: x.root.clone(),
                path: up.to_vec(),
                doc: false,
            };
            parent.with_mut(|e| {
                if let Some(e) = e
                    && *last < e.children.len()
                {
                    e.children.remove(*last);
                }
            });
            Ok(V::Null)
        }
        "RemoveNodes" | "RemoveAll" | "RemoveAttributes" => {
            x.with_mut(|e| {
                let Some(e) = e else { return };
                if name != "RemoveAttributes" {
                    e.children.clear();
                }
                if name != "RemoveNodes" {
                    e.attrs.retain(|(n, _)| is_declaration(n));
                }
            });
            Ok(V::Null)
        }
        "ReplaceWith" => {
            let mut nodes = Vec::new();
            content(&arg(args, 0, name)?, &mut nodes, &mut Vec::new())?;
            let Some((last, up)) = x.path.split_last() else {
                return match nodes.pop() {
                    Some(XNode::Element(new)) => {
                        *x.root.lock() = new;
                        Ok(V::Null)
                    }
                    _ => fail("the root element can only be replaced by an element"),
                };
            };
            let parent = Xml {
                root: x.root.clone(),
                path: up.to_vec(),
                doc: false,
            };
            parent.with_mut(|e| {
                if let Some(e) = e
                    && *last < e.children.len()
                {
                    e.children.splice(*last..*last + 1, nodes);
                }
            });
            Ok(V::Null)
        }
        "GetDefaultNamespace" => {
            Ok(V::native(Native::Namespace(x.with(|e| {
                e.map(|e| e.namespace().to_string()).unwrap_or_default()
            }))))
        }
        _ => unknown(),
    }
}

/// What `Add(content)` adds: elements (copied), attributes, text, or the items of a list.
pub fn content(
    v: &V,
    nodes: &mut Vec<XNode>,
    attrs: &mut Vec<(String, String)>,
) -> Result<(), EvalError> {
    match v {
        V::Null => {}
        V::Xml(x) => {
            let e = x
                .with(|e| e.cloned())
                .ok_or_else(|| EvalError("the element was removed".into()))?;
            nodes.push(XNode::Element(e));
        }
        V::Native(n) => match &**n {
            Native::XAttribute(name, value) => attrs.push((name.clone(), value.clone())),
            _ => nodes.push(XNode::Text(v.text())),
        },
        V::List(l) => {
            for item in l.lock().iter() {
                crate::stack::deeper(|| content(item, nodes, attrs))?;
            }
        }
        V::Json(_) => nodes.push(XNode::Text(super::super::value::json_text(
            &to_json(v),
            false,
        ))),
        other => nodes.push(XNode::Text(other.text())),
    }
    Ok(())
}

pub fn set_member(x: &Xml, name: &str, v: V) -> Result<(), EvalError> {
    match name {
        "Value" => {
            call(x, "SetValue", &[v])?;
            Ok(())
        }
        "Name" => {
            let n = v.text();
            x.with_mut(|e| e.map(|e| e.name = n));
            Ok(())
        }
        n => fail(format!("XElement.{n} cannot be set")),
    }
}
