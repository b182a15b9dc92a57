//! validate-content: a request's (inbound) or response's (outbound, on-error) body checked for
//! size, content type and — for JSON — against a JSON schema: the one the operation's
//! representation names (`schemaId` + `typeName`, as an OpenAPI import stores them), or a
//! schema of the instance named by `schema-id` (with `schema-ref` into it).
//!
//! Findings and actions are validate-parameters' (see [`super::validate`]). Validators are
//! compiled once per schema revision and kept, at most [`MAX_CACHED`] per policy.
//! `validate-as="xml"` and `"soap"` need an XML Schema validator, which this gateway does not
//! have: they are refused at write time.

use super::validate::{Action, Finding, action, conclude, definition, finding, response_for};
use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow, SchemaDocument};
use crate::node::{At, Policy, Run};
use crate::position::Section;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// APIM's limit on `max-size`: 4 MiB.
const MAX_SIZE_LIMIT: u64 = 4 * 1024 * 1024;
/// Compiled validators kept per policy (a policy normally sees one or two schemas).
const MAX_CACHED: usize = 32;
/// Schema errors reported per body.
const MAX_ERRORS: usize = 10;

#[derive(Debug)]
struct ContentRule {
    content_type: String,
    action: Action,
    schema_id: Option<String>,
    schema_ref: Option<String>,
    allow_additional: Option<bool>,
    case_insensitive: bool,
}

/// `<content-type-map>`: how a message's content type is read before a rule is chosen.
#[derive(Debug, Default)]
struct TypeMap {
    any: Option<String>,
    missing: Option<String>,
    from: Vec<(String, String)>,
    when: Vec<(regex::Regex, String)>,
}

pub struct ValidateContent {
    unspecified: Action,
    max_size: u64,
    size_exceeded: Action,
    variable: Option<String>,
    map: TypeMap,
    rules: Vec<ContentRule>,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

impl std::fmt::Debug for ValidateContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValidateContent")
            .field("max_size", &self.max_size)
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

pub fn parse_validate_content<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(
        node,
        section,
        &[Section::Inbound, Section::Outbound, Section::OnError],
    )?;
    cx.check_attrs(
        node,
        &[
            "unspecified-content-type-action",
            "max-size",
            "size-exceeded-action",
            "errors-variable-name",
        ],
    )?;
    cx.reads_body = true;
    let max_size = max_size(cx, node)?;
    let mut policy = ValidateContent {
        unspecified: action(cx, node, "unspecified-content-type-action", None)?,
        max_size,
        size_exceeded: action(cx, node, "size-exceeded-action", None)?,
        variable: cx.literal(node, "errors-variable-name")?,
        map: TypeMap::default(),
        rules: Vec::new(),
        validators: Mutex::new(HashMap::new()),
    };
    for c in cx.children(node)? {
        match c.tag_name().name() {
            "content" => policy.rules.push(content_rule(cx, c)?),
            "content-type-map" => policy.map = type_map(cx, c)?,
            other => {
                return cx.err(
                    c,
                    format!(
                        "<validate-content> may contain <content> and <content-type-map>, not <{other}>"
                    ),
                );
            }
        }
    }
    Ok(Box::new(policy))
}

fn max_size(cx: &Ctx<'_, '_>, node: XNode<'_>) -> Res<u64> {
    let text = cx.literal(node, "max-size")?;
    match text.as_deref().map(|t| t.trim().parse::<u64>()) {
        Some(Ok(n)) if n <= MAX_SIZE_LIMIT => Ok(n),
        None => cx.err(
            node,
            "<validate-content> needs the attribute 'max-size' (bytes)",
        ),
        _ => cx.err(
            node,
            format!(
                "'max-size' must be a number of bytes up to {MAX_SIZE_LIMIT}, not '{}'",
                text.unwrap_or_default()
            ),
        ),
    }
}

fn content_rule(cx: &Ctx<'_, '_>, c: XNode<'_>) -> Res<ContentRule> {
    cx.check_attrs(
        c,
        &[
            "type",
            "validate-as",
            "action",
            "schema-id",
            "schema-ref",
            "allow-additional-properties",
            "case-insensitive-property-names",
        ],
    )?;
    match cx.literal(c, "validate-as")?.as_deref() {
        Some("json") => {}
        Some(kind @ ("xml" | "soap")) => {
            return cx.err(
                c,
                format!(
                    "validate-as=\"{kind}\" needs an XML Schema validator, which this gateway does not have yet; validate JSON content, or check XML with an expression"
                ),
            );
        }
        Some(other) => {
            return cx.err(
                c,
                format!("'validate-as' must be json, xml or soap, not '{other}'"),
            );
        }
        None => return cx.err(c, "<content> needs the attribute 'validate-as'"),
    }
    let flag = |name: &str| -> Res<Option<bool>> {
        match cx.literal(c, name)?.as_deref() {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => cx.err(c, format!("'{name}' must be true or false, not '{other}'")),
        }
    };
    Ok(ContentRule {
        content_type: cx.literal(c, "type")?.unwrap_or_default(),
        action: action(cx, c, "action", None)?,
        schema_id: cx.literal(c, "schema-id")?,
        schema_ref: cx.literal(c, "schema-ref")?,
        allow_additional: flag("allow-additional-properties")?,
        case_insensitive: flag("case-insensitive-property-names")?.unwrap_or(false),
    })
}

fn type_map(cx: &Ctx<'_, '_>, node: XNode<'_>) -> Res<TypeMap> {
    cx.check_attrs(
        node,
        &["any-content-type-value", "missing-content-type-value"],
    )?;
    let mut map = TypeMap {
        any: cx.literal(node, "any-content-type-value")?,
        missing: cx.literal(node, "missing-content-type-value")?,
        ..TypeMap::default()
    };
    for t in cx.children(node)? {
        if t.tag_name().name() != "type" {
            return cx.err(t, "<content-type-map> may contain <type> only");
        }
        cx.check_attrs(t, &["from", "when", "to"])?;
        let to = cx.literal(t, "to")?.unwrap_or_default();
        match (cx.literal(t, "from")?, cx.literal(t, "when")?) {
            (Some(from), None) => map.from.push((from.to_ascii_lowercase(), to)),
            (None, Some(when)) => match regex::Regex::new(&when) {
                Ok(re) => map.when.push((re, to)),
                Err(e) => return cx.err(t, format!("'when' is not a regular expression: {e}")),
            },
            _ => return cx.err(t, "<type> needs either 'from' or 'when', and 'to'"),
        }
    }
    Ok(map)
}

impl TypeMap {
    /// The content type a message is validated as (lower case, without parameters).
    fn read(&self, given: Option<&str>) -> Option<String> {
        if let Some(any) = &self.any {
            return Some(any.to_ascii_lowercase());
        }
        let Some(given) = given else {
            return self.missing.as_ref().map(|m| m.to_ascii_lowercase());
        };
        let media = given
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if let Some((_, to)) = self.from.iter().find(|(f, _)| *f == media) {
            return Some(to.to_ascii_lowercase());
        }
        if let Some((_, to)) = self.when.iter().find(|(re, _)| re.is_match(given)) {
            return Some(to.to_ascii_lowercase());
        }
        Some(media)
    }
}

impl Policy for ValidateContent {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

/// The message a section validates: its content type, body and (for a response) status.
struct Message<'e> {
    content_type: Option<&'e str>,
    body: &'e [u8],
    status: Option<u16>,
    noun: &'static str,
}

fn message<'e>(at: At<'_>, ex: &'e Exchange) -> Message<'e> {
    match ex.response.as_ref().filter(|_| ex.on_response(at.section)) {
        Some(r) => Message {
            content_type: r.header("content-type"),
            body: r.body.as_deref().unwrap_or_default(),
            status: Some(r.status),
            noun: "response",
        },
        None => Message {
            content_type: ex.header("content-type"),
            body: ex.request_body.as_deref().unwrap_or_default(),
            status: None,
            noun: "request",
        },
    }
}

impl ValidateContent {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let msg = message(at, ex);
        let status = if msg.status.is_some() { 502 } else { 400 };
        let findings = self.findings(at, &msg)?;
        conclude(at, ex, &self.variable, findings, status)
    }

    fn findings(&self, at: At<'_>, msg: &Message<'_>) -> Result<Vec<Finding>, Flow> {
        let mut out = Vec::new();
        let size = msg.body.len() as u64;
        if size > self.max_size {
            out.push(finding(
                "",
                "body",
                "MaxSize",
                format!(
                    "Body of the {} is {size} bytes long and exceeds the configured limit of {} bytes.",
                    msg.noun, self.max_size
                ),
                self.size_exceeded,
            ));
            return Ok(out);
        }
        if msg.body.is_empty() {
            return Ok(out);
        }
        let content_type = self.map.read(msg.content_type).unwrap_or_default();
        let Some(rule) = self
            .rules
            .iter()
            .find(|r| r.content_type.eq_ignore_ascii_case(&content_type))
        else {
            out.push(finding(
                "",
                "body",
                "UnspecifiedContentType",
                format!("Unspecified content type {content_type} is not allowed."),
                self.unspecified,
            ));
            return Ok(out);
        };
        self.check_json(at, msg, rule, &content_type, &mut out)?;
        Ok(out)
    }

    fn check_json(
        &self,
        at: At<'_>,
        msg: &Message<'_>,
        rule: &ContentRule,
        content_type: &str,
        out: &mut Vec<Finding>,
    ) -> Result<(), Flow> {
        let prefix = format!(
            "Body of the {} does not conform to the definition which is associated with the content type {content_type}.",
            msg.noun
        );
        let mut instance: Value = match serde_json::from_slice(msg.body) {
            Ok(v) => v,
            Err(e) => {
                out.push(finding(
                    "",
                    "body",
                    "IncorrectMessage",
                    format!("{prefix} The body is not valid JSON: {e}."),
                    rule.action,
                ));
                return Ok(());
            }
        };
        let Some(validator) = self.validator(at, msg, rule, content_type)? else {
            return Ok(());
        };
        if rule.case_insensitive {
            lowercase_keys(&mut instance);
        }
        for e in validator.iter_errors(&instance).take(MAX_ERRORS) {
            let path = e.instance_path().to_string();
            let path = path.trim_start_matches('/').replace('/', ".");
            out.push(finding(
                "",
                "body",
                "IncorrectMessage",
                format!("{prefix} {e}. Path: '{path}'."),
                rule.action,
            ));
        }
        Ok(())
    }

    /// The compiled schema for a rule, or `None` when the message has no schema to check.
    fn validator(
        &self,
        at: At<'_>,
        msg: &Message<'_>,
        rule: &ContentRule,
        content_type: &str,
    ) -> Result<Option<Arc<jsonschema::Validator>>, Flow> {
        let Some(source) = self.schema_source(at, msg, rule, content_type)? else {
            return Ok(None);
        };
        let key = format!(
            "{}|{:?}|{:?}|{}",
            source.document.key, source.target, rule.allow_additional, rule.case_insensitive
        );
        let mut cache = self.validators.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache.get(&key) {
            return Ok(Some(v.clone()));
        }
        let compiled = compile(&source, rule).map_err(|e| {
            at.fail(
                500,
                "ValidationFailure",
                format!("The schema for content type {content_type} cannot be used: {e}"),
            )
        })?;
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        let compiled = Arc::new(compiled);
        cache.insert(key, compiled.clone());
        Ok(Some(compiled))
    }

    /// Where the schema comes from: the rule's `schema-id`, else the operation's
    /// representation of this content type.
    fn schema_source(
        &self,
        at: At<'_>,
        msg: &Message<'_>,
        rule: &ContentRule,
        content_type: &str,
    ) -> Result<Option<SchemaSource>, Flow> {
        if let Some(id) = &rule.schema_id {
            let document = at.svc.content_schema(id, true).ok_or_else(|| {
                at.fail(
                    500,
                    "ValidationFailure",
                    format!("The schema '{id}' named by validate-content does not exist."),
                )
            })?;
            return Ok(Some(SchemaSource {
                document,
                target: rule.schema_ref.clone(),
                openapi: false,
            }));
        }
        let op = definition(at)?;
        let reps = match msg.status {
            Some(status) => response_for(&op, status).and_then(|r| r.get("representations")),
            None => op.get("request").and_then(|r| r.get("representations")),
        };
        let rep = reps.and_then(Value::as_array).and_then(|reps| {
            reps.iter().find(|r| {
                r.get("contentType")
                    .and_then(Value::as_str)
                    .is_some_and(|c| c.eq_ignore_ascii_case(content_type))
            })
        });
        let (Some(schema_id), Some(type_name)) = (
            rep.and_then(|r| r.get("schemaId")).and_then(Value::as_str),
            rep.and_then(|r| r.get("typeName")).and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        let document = at.svc.content_schema(schema_id, false).ok_or_else(|| {
            at.fail(
                500,
                "ValidationFailure",
                format!("The API's schema '{schema_id}' does not exist."),
            )
        })?;
        Ok(Some(SchemaSource {
            document,
            target: Some(format!("#/components/schemas/{type_name}")),
            openapi: true,
        }))
    }
}

struct SchemaSource {
    document: SchemaDocument,
    /// A local reference to the type in the document (`#/components/schemas/Pet`).
    target: Option<String>,
    /// OpenAPI 3.0's dialect: draft 4 with `nullable`.
    openapi: bool,
}

/// Keywords that assert at a schema's root: dropped from a root whose target is a reference,
/// so that (in drafts where `$ref` has siblings) only the referenced type applies.
const ROOT_ASSERTIONS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "items",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "enum",
    "const",
    "if",
    "then",
    "else",
    "minProperties",
    "maxProperties",
    "$ref",
    "unevaluatedProperties",
];

fn compile(source: &SchemaSource, rule: &ContentRule) -> Result<jsonschema::Validator, String> {
    let mut root = source.document.document.clone();
    if source.openapi {
        openapi_nullable(&mut root);
    }
    if let Some(allow) = rule.allow_additional {
        additional_properties(&mut root, allow);
    }
    if rule.case_insensitive {
        lowercase_schema(&mut root);
    }
    if let Some(target) = &source.target {
        let Value::Object(map) = &mut root else {
            return Err("the schema document is not a JSON object".into());
        };
        map.retain(|k, _| !ROOT_ASSERTIONS.contains(&k.as_str()));
        map.insert("$ref".into(), json!(target));
        let pointer = target.trim_start_matches('#');
        if root.pointer(pointer).is_none() {
            return Err(format!("the schema has no type at '{target}'"));
        }
    }
    let mut options = jsonschema::options().should_validate_formats(true);
    if source.openapi {
        options = options.with_draft(jsonschema::Draft::Draft4);
    }
    options.build(&root).map_err(|e| e.to_string())
}

/// Whether a stored JSON schema can be used by validate-content: the problem, if not.
pub fn check_schema(document: &Value) -> Result<(), String> {
    jsonschema::options()
        .build(document)
        .map(|_| ())
        .map_err(|e| format!("the JSON schema is not valid: {e}"))
}

/// Applies `f` to every JSON object in a value, depth first (documents come parsed by
/// serde_json, whose depth limit bounds the recursion).
fn each_object(v: &mut Value, f: &mut dyn FnMut(&mut Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            f(m);
            for child in m.values_mut() {
                each_object(child, f);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| each_object(c, f)),
        _ => {}
    }
}

/// OpenAPI 3.0's `nullable: true` as JSON Schema says it: `null` is one more type.
fn openapi_nullable(root: &mut Value) {
    each_object(root, &mut |m| {
        if m.get("nullable") == Some(&Value::Bool(true))
            && let Some(Value::String(t)) = m.get("type").cloned()
        {
            m.insert("type".into(), json!([t, "null"]));
        }
    });
}

/// `allow-additional-properties`: the policy's answer replaces every object type's own.
fn additional_properties(root: &mut Value, allow: bool) {
    each_object(root, &mut |m| {
        let is_object_type =
            m.get("type") == Some(&json!("object")) || m.contains_key("properties");
        if is_object_type {
            m.insert("additionalProperties".into(), Value::Bool(allow));
        }
    });
}

/// `case-insensitive-property-names`: property names and required names in lower case (the
/// body's keys are lowered the same way).
fn lowercase_schema(root: &mut Value) {
    each_object(root, &mut |m| {
        if let Some(Value::Object(props)) = m.get_mut("properties") {
            let lowered: Map<String, Value> = std::mem::take(props)
                .into_iter()
                .map(|(k, v)| (k.to_lowercase(), v))
                .collect();
            *props = lowered;
        }
        if let Some(Value::Array(required)) = m.get_mut("required") {
            for r in required.iter_mut() {
                if let Value::String(s) = r {
                    *s = s.to_lowercase();
                }
            }
        }
    });
}

fn lowercase_keys(v: &mut Value) {
    each_object(v, &mut |m| {
        let lowered: Map<String, Value> = std::mem::take(m)
            .into_iter()
            .map(|(k, v)| (k.to_lowercase(), v))
            .collect();
        *m = lowered;
    });
}
