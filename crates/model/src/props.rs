//! Property schemas per kind: names, types, limits, which are required, read-only or secret.
//!
//! Invariants: `check_input` never lets an unknown property through and drops read-only ones
//! (so a GET → PUT round trip works); `secret_pointers` names every field that must be sealed
//! at rest and never rendered by GET.

use crate::kind::Kind;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy)]
pub enum Ty {
    Str { min: usize, max: usize },
    Enum(&'static [&'static str]),
    Bool,
    Int { min: i64, max: i64 },
    Array { max: usize },
    Object,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    ReadWrite,
    /// Computed by the server; ignored on input.
    ReadOnly,
    /// Accepted on input, never rendered (keys, passwords, private keys).
    WriteOnly,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    pub access: Access,
    /// `null` is accepted (the property is then unset).
    pub nullable: bool,
}

const fn f(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        access: Access::ReadWrite,
        nullable: true,
    }
}
const fn req(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: true,
        access: Access::ReadWrite,
        nullable: false,
    }
}
const fn ro(name: &'static str) -> Field {
    Field {
        name,
        ty: Ty::Any,
        required: false,
        access: Access::ReadOnly,
        nullable: true,
    }
}
const fn wo(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        access: Access::WriteOnly,
        nullable: true,
    }
}
const fn s(min: usize, max: usize) -> Ty {
    Ty::Str { min, max }
}
const ANY_STR: Ty = Ty::Str {
    min: 0,
    max: 1 << 20,
};

const API: &[Field] = &[
    req("displayName", s(1, 300)),
    req("path", s(0, 400)),
    f("serviceUrl", s(0, 2000)),
    f("protocols", Ty::Array { max: 4 }),
    f("description", ANY_STR),
    f(
        "type",
        Ty::Enum(&["http", "soap", "websocket", "graphql", "odata", "grpc"]),
    ),
    f("apiRevision", s(1, 100)),
    f("apiVersion", s(0, 100)),
    f("apiVersionSetId", s(0, 2000)),
    f("apiVersionDescription", s(0, 256)),
    f("apiRevisionDescription", s(0, 256)),
    f("isCurrent", Ty::Bool),
    f("subscriptionRequired", Ty::Bool),
    f("subscriptionKeyParameterNames", Ty::Object),
    f("authenticationSettings", Ty::Object),
    f("termsOfServiceUrl", s(0, 2000)),
    f("contact", Ty::Object),
    f("license", Ty::Object),
    f("sourceApiId", s(0, 2000)),
    ro("apiVersionSet"),
    ro("isOnline"),
    ro("apiType"),
    ro("wsdlSelector"),
    ro("translateRequiredQueryParameters"),
    ro("provisioningState"),
];

const OPERATION: &[Field] = &[
    req("displayName", s(1, 300)),
    req("method", s(1, 20)),
    req("urlTemplate", s(1, 1000)),
    f("templateParameters", Ty::Array { max: 1000 }),
    f("description", s(0, 1000)),
    f("request", Ty::Object),
    f("responses", Ty::Array { max: 1000 }),
    f("policies", Ty::Any),
];

const POLICY: &[Field] = &[
    req("value", ANY_STR),
    f(
        "format",
        Ty::Enum(&["xml", "xml-link", "rawxml", "rawxml-link"]),
    ),
];

const PRODUCT: &[Field] = &[
    req("displayName", s(1, 300)),
    f("description", s(0, 1000)),
    f("terms", ANY_STR),
    f("subscriptionRequired", Ty::Bool),
    f("approvalRequired", Ty::Bool),
    f(
        "subscriptionsLimit",
        Ty::Int {
            min: 0,
            max: i64::MAX,
        },
    ),
    f("state", Ty::Enum(&["notPublished", "published"])),
];

const SUBSCRIPTION: &[Field] = &[
    req("scope", s(1, 2000)),
    req("displayName", s(1, 100)),
    f("ownerId", s(0, 2000)),
    f(
        "state",
        Ty::Enum(&[
            "submitted",
            "active",
            "suspended",
            "rejected",
            "cancelled",
            "expired",
        ]),
    ),
    wo("primaryKey", s(1, 256)),
    wo("secondaryKey", s(1, 256)),
    f("allowTracing", Ty::Bool),
    f("stateComment", ANY_STR),
    f("startDate", ANY_STR),
    f("expirationDate", ANY_STR),
    f("endDate", ANY_STR),
    f("notificationDate", ANY_STR),
    ro("createdDate"),
];

const USER: &[Field] = &[
    req("email", s(1, 254)),
    req("firstName", s(1, 100)),
    req("lastName", s(1, 100)),
    wo("password", s(1, 256)),
    f(
        "state",
        Ty::Enum(&["active", "blocked", "pending", "deleted"]),
    ),
    f("note", ANY_STR),
    f("identities", Ty::Array { max: 100 }),
    f("appType", Ty::Enum(&["portal", "developerPortal"])),
    f("confirmation", Ty::Enum(&["signup", "invite"])),
    ro("registrationDate"),
    ro("groups"),
];

const GROUP: &[Field] = &[
    req("displayName", s(1, 300)),
    f("description", s(0, 1000)),
    f("type", Ty::Enum(&["custom", "system", "external"])),
    f("externalId", s(0, 2000)),
    ro("builtIn"),
];

const NAMED_VALUE: &[Field] = &[
    req("displayName", s(1, 256)),
    f("value", s(0, 4096)),
    f("secret", Ty::Bool),
    f("tags", Ty::Array { max: 32 }),
    f("keyVault", Ty::Object),
    ro("provisioningState"),
];

const BACKEND: &[Field] = &[
    // Required of a single backend; a pool has none (checked by the backend rules).
    f("url", s(1, 2000)),
    f("protocol", Ty::Enum(&["http", "soap"])),
    f("title", s(0, 300)),
    f("description", s(0, 2000)),
    f("resourceId", s(0, 2000)),
    f("credentials", Ty::Object),
    f("proxy", Ty::Object),
    f("tls", Ty::Object),
    f("circuitBreaker", Ty::Object),
    f("pool", Ty::Object),
    f("type", Ty::Enum(&["Single", "Pool"])),
    f("properties", Ty::Object),
];

const CERTIFICATE: &[Field] = &[
    wo("data", ANY_STR),
    wo("password", ANY_STR),
    f("keyVault", Ty::Object),
    ro("subject"),
    ro("thumbprint"),
    ro("expirationDate"),
];

const FRAGMENT: &[Field] = &[
    req("value", ANY_STR),
    f("description", s(0, 1000)),
    f("format", Ty::Enum(&["xml", "rawxml"])),
    ro("provisioningState"),
];

const TAG: &[Field] = &[req("displayName", s(1, 160))];

const VERSION_SET: &[Field] = &[
    req("displayName", s(1, 100)),
    req(
        "versioningScheme",
        Ty::Enum(&["Segment", "Query", "Header"]),
    ),
    f("versionQueryName", s(1, 100)),
    f("versionHeaderName", s(1, 100)),
    f("description", ANY_STR),
];

const LOGGER: &[Field] = &[
    req(
        "loggerType",
        Ty::Enum(&["azureEventHub", "applicationInsights", "azureMonitor"]),
    ),
    f("description", s(0, 256)),
    wo("credentials", Ty::Object),
    f("isBuffered", Ty::Bool),
    f("resourceId", s(0, 2000)),
];

const DIAGNOSTIC: &[Field] = &[
    req("loggerId", s(1, 2000)),
    f("alwaysLog", Ty::Enum(&["allErrors"])),
    f("sampling", Ty::Object),
    f("frontend", Ty::Object),
    f("backend", Ty::Object),
    f("logClientIp", Ty::Bool),
    f(
        "httpCorrelationProtocol",
        Ty::Enum(&["None", "Legacy", "W3C"]),
    ),
    f("verbosity", Ty::Enum(&["verbose", "information", "error"])),
    f("operationNameFormat", Ty::Enum(&["Name", "Url"])),
    f("metrics", Ty::Bool),
];

/// An API's schema: GraphQL's SDL, a SOAP API's WSDL, a WADL, or definitions a specification
/// shares (`document.value` holds text; `definitions`/`components` JSON).
const SCHEMA: &[Field] = &[
    req("contentType", s(1, 200)),
    req("document", Ty::Object),
    ro("provisioningState"),
];

/// A service-level schema (`/schemas/{id}`) for validate-content: a JSON schema in
/// `document`, or an XML schema as text in `value`.
const GLOBAL_SCHEMA: &[Field] = &[
    req("schemaType", Ty::Enum(&["json", "xml"])),
    f("description", s(0, 2000)),
    f("value", ANY_STR),
    f("document", Ty::Object),
    ro("provisioningState"),
];

const RELEASE: &[Field] = &[
    req("apiId", s(1, 2000)),
    f("notes", ANY_STR),
    ro("createdDateTime"),
    ro("updatedDateTime"),
];

const ISSUE: &[Field] = &[
    req("title", s(1, 1000)),
    req("description", ANY_STR),
    req("userId", s(1, 2000)),
    f("apiId", s(0, 2000)),
    f(
        "state",
        Ty::Enum(&["proposed", "open", "removed", "resolved", "closed"]),
    ),
    f("createdDate", ANY_STR),
];

const WIKI: &[Field] = &[f("documents", Ty::Array { max: 100 })];

/// The identity providers APIM's developer portal signs in with (their resource ids).
pub const IDENTITY_PROVIDERS: &[&str] = &[
    "facebook",
    "google",
    "microsoft",
    "twitter",
    "aad",
    "aadB2C",
];

const IDENTITY_PROVIDER: &[Field] = &[
    req("clientId", s(1, 2000)),
    wo("clientSecret", s(1, 2000)),
    f("type", Ty::Enum(IDENTITY_PROVIDERS)),
    f("signinTenant", s(0, 2000)),
    f("allowedTenants", Ty::Array { max: 32 }),
    f("authority", s(0, 2000)),
    f("signupPolicyName", s(0, 2000)),
    f("signinPolicyName", s(0, 2000)),
    f("profileEditingPolicyName", s(0, 2000)),
    f("passwordResetPolicyName", s(0, 2000)),
    f("clientLibrary", s(0, 16)),
];

const AUTHORIZATION_SERVER: &[Field] = &[
    req("displayName", s(1, 50)),
    req("clientRegistrationEndpoint", s(1, 2000)),
    req("authorizationEndpoint", s(1, 2000)),
    req("grantTypes", Ty::Array { max: 4 }),
    req("clientId", s(1, 2000)),
    wo("clientSecret", s(0, 2000)),
    f("description", ANY_STR),
    f("authorizationMethods", Ty::Array { max: 8 }),
    f("clientAuthenticationMethod", Ty::Array { max: 2 }),
    f("tokenBodyParameters", Ty::Array { max: 100 }),
    f("tokenEndpoint", s(0, 2000)),
    f("supportState", Ty::Bool),
    f("defaultScope", s(0, 2000)),
    f("bearerTokenSendingMethods", Ty::Array { max: 2 }),
    wo("resourceOwnerUsername", s(0, 2000)),
    wo("resourceOwnerPassword", s(0, 2000)),
    f("useInTestConsole", Ty::Bool),
    f("useInApiDocumentation", Ty::Bool),
];

const OPENID_PROVIDER: &[Field] = &[
    req("displayName", s(1, 50)),
    req("metadataEndpoint", s(1, 2000)),
    req("clientId", s(1, 2000)),
    wo("clientSecret", s(0, 2000)),
    f("description", ANY_STR),
    f("useInTestConsole", Ty::Bool),
    f("useInApiDocumentation", Ty::Bool),
];

const CACHE: &[Field] = &[
    req("connectionString", s(1, 300)),
    req("useFromLocation", s(1, 256)),
    f("description", s(0, 2000)),
    f("resourceId", s(0, 2000)),
];

const EMAIL_TEMPLATE: &[Field] = &[
    f("subject", s(1, 1000)),
    f("body", ANY_STR),
    f("title", ANY_STR),
    f("description", ANY_STR),
    f("parameters", Ty::Array { max: 100 }),
    ro("isDefault"),
];

const PORTAL_SETTING: &[Field] = &[
    f("enabled", Ty::Bool),
    f("termsOfService", Ty::Object),
    f("url", s(0, 2000)),
    wo("validationKey", s(0, 2000)),
    f("subscriptions", Ty::Object),
    f("userRegistration", Ty::Object),
    // Gatehouse: whether a new account of the portal's sign-up is active at once
    // (`automatic`) or waits for an administrator (`administrator`).
    f("approval", Ty::Enum(&["automatic", "administrator"])),
];

const CONTENT_TYPE: &[Field] = &[
    f("name", s(0, 250)),
    f("description", s(0, 1000)),
    f("schema", Ty::Object),
    f("version", s(0, 50)),
];

/// The developer portal's content items. APIM's items are free-form; Gatehouse's built-in
/// content types (`page`, `styles`, `blob`) use these fields, checked per type by the rules.
const CONTENT_ITEM: &[Field] = &[
    f("title", s(0, 200)),
    f("permalink", s(0, 200)),
    f("description", s(0, 1000)),
    f("body", s(0, 256 * 1024)),
    f("format", Ty::Enum(&["markdown", "html"])),
    f("navOrder", Ty::Int { min: 0, max: 1000 }),
    f("siteTitle", s(0, 100)),
    f("primaryColor", s(0, 7)),
    f("accentColor", s(0, 7)),
    f("logo", s(0, 80)),
    f("footer", s(0, 2000)),
    f("contentType", s(0, 100)),
    // An image of at most 1 MiB, base64-encoded.
    f("data", s(0, 1_400_000)),
];

const PORTAL_REVISION: &[Field] = &[
    f("description", s(0, 2000)),
    f("isCurrent", Ty::Bool),
    ro("status"),
    ro("statusDetails"),
    ro("createdDateTime"),
    ro("updatedDateTime"),
    // The published content: every content item at the time of publishing (captured by the
    // server when absent, so an export carries it and an import restores it).
    f("content", Ty::Object),
];

const TENANT_ACCESS: &[Field] = &[
    f("enabled", Ty::Bool),
    wo("primaryKey", s(1, 256)),
    wo("secondaryKey", s(1, 256)),
    ro("principalId"),
];

const GATEWAY: &[Field] = &[
    req("locationData", Ty::Object),
    f("description", s(0, 1000)),
    wo("primaryKey", s(1, 256)),
    wo("secondaryKey", s(1, 256)),
    // What the gateway's nodes report (shown by GET, never written).
    ro("nodes"),
];

const GATEWAY_HOSTNAME: &[Field] = &[
    req("hostname", s(1, 2000)),
    f("certificateId", s(0, 2000)),
    f("negotiateClientCertificate", Ty::Bool),
    f("tls10Enabled", Ty::Bool),
    f("tls11Enabled", Ty::Bool),
    f("http2Enabled", Ty::Bool),
];

const GATEWAY_CA: &[Field] = &[f("isTrusted", Ty::Bool)];

const GATEWAY_API: &[Field] = &[ro("provisioningState")];

/// Links carry no properties of their own/// Links carry no properties of their own; whatever GET shows comes from the target.
const LINK: &[Field] = &[];

pub fn fields(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Api => API,
        Kind::Operation => OPERATION,
        Kind::GlobalPolicy | Kind::ProductPolicy | Kind::ApiPolicy | Kind::OperationPolicy => {
            POLICY
        }
        Kind::Product => PRODUCT,
        Kind::Subscription => SUBSCRIPTION,
        Kind::User => USER,
        Kind::Group => GROUP,
        Kind::NamedValue => NAMED_VALUE,
        Kind::Backend => BACKEND,
        Kind::Certificate => CERTIFICATE,
        Kind::PolicyFragment => FRAGMENT,
        Kind::Tag => TAG,
        Kind::ApiVersionSet => VERSION_SET,
        Kind::Logger => LOGGER,
        Kind::Diagnostic | Kind::ApiDiagnostic => DIAGNOSTIC,
        Kind::ApiSchema => SCHEMA,
        Kind::GlobalSchema => GLOBAL_SCHEMA,
        Kind::ApiRelease => RELEASE,
        Kind::ApiIssue => ISSUE,
        Kind::ApiWiki | Kind::ProductWiki => WIKI,
        Kind::IdentityProvider => IDENTITY_PROVIDER,
        Kind::AuthorizationServer => AUTHORIZATION_SERVER,
        Kind::OpenIdConnectProvider => OPENID_PROVIDER,
        Kind::Cache => CACHE,
        Kind::EmailTemplate => EMAIL_TEMPLATE,
        Kind::PortalSetting => PORTAL_SETTING,
        Kind::TenantAccess => TENANT_ACCESS,
        Kind::ContentType => CONTENT_TYPE,
        Kind::ContentItem => CONTENT_ITEM,
        Kind::PortalRevision => PORTAL_REVISION,
        Kind::Gateway => GATEWAY,
        Kind::GatewayHostnameConfiguration => GATEWAY_HOSTNAME,
        Kind::GatewayCertificateAuthority => GATEWAY_CA,
        Kind::ProductApi
        | Kind::ProductGroup
        | Kind::ProductTag
        | Kind::GroupUser
        | Kind::ApiTag
        | Kind::OperationTag => LINK,
        // APIM's association body, `{"properties": {"provisioningState": "created"}}`.
        Kind::GatewayApi => GATEWAY_API,
    }
}

/// One problem with one property, reported in the error envelope's `details`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub target: String,
    pub message: String,
}

impl FieldError {
    pub fn new(target: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            target: target.into(),
            message: message.into(),
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_value(field: &Field, v: &Value) -> Result<(), String> {
    if v.is_null() {
        return if field.nullable {
            Ok(())
        } else {
            Err(format!("'{}' must not be null", field.name))
        };
    }
    match field.ty {
        Ty::Any => Ok(()),
        Ty::Str { min, max } => {
            let Value::String(s) = v else {
                return Err(format!(
                    "'{}' must be a string, not {}",
                    field.name,
                    type_name(v)
                ));
            };
            let len = s.chars().count();
            if len < min || len > max {
                if min == 0 {
                    return Err(format!(
                        "'{}' must be at most {max} characters long (it has {len})",
                        field.name
                    ));
                }
                return Err(format!(
                    "'{}' must be between {min} and {max} characters long (it has {len})",
                    field.name
                ));
            }
            Ok(())
        }
        Ty::Enum(values) => {
            let Value::String(s) = v else {
                return Err(format!(
                    "'{}' must be a string, not {}",
                    field.name,
                    type_name(v)
                ));
            };
            if values.iter().any(|x| x.eq_ignore_ascii_case(s)) {
                Ok(())
            } else {
                Err(format!(
                    "'{}' must be one of {}; '{s}' is not",
                    field.name,
                    values.join(", ")
                ))
            }
        }
        Ty::Bool => v.is_boolean().then_some(()).ok_or_else(|| {
            format!(
                "'{}' must be true or false, not {}",
                field.name,
                type_name(v)
            )
        }),
        Ty::Int { min, max } => match v.as_i64() {
            Some(n) if n >= min && n <= max => Ok(()),
            Some(n) => Err(format!(
                "'{}' must be between {min} and {max} (it is {n})",
                field.name
            )),
            None => Err(format!(
                "'{}' must be a whole number, not {}",
                field.name,
                type_name(v)
            )),
        },
        Ty::Array { max } => match v.as_array() {
            Some(a) if a.len() <= max => Ok(()),
            Some(a) => Err(format!(
                "'{}' may have at most {max} items (it has {})",
                field.name,
                a.len()
            )),
            None => Err(format!(
                "'{}' must be an array, not {}",
                field.name,
                type_name(v)
            )),
        },
        Ty::Object => v
            .is_object()
            .then_some(())
            .ok_or_else(|| format!("'{}' must be an object, not {}", field.name, type_name(v))),
    }
}

/// Checks the properties of a PUT or PATCH body: unknown properties and wrong types are
/// errors; read-only properties are dropped; enum values are normalised to APIM's casing.
/// Required properties are checked separately by [`check_required`], after any merge.
pub fn check_input(
    kind: Kind,
    input: &Map<String, Value>,
) -> Result<Map<String, Value>, Vec<FieldError>> {
    let schema = fields(kind);
    let mut out = Map::new();
    let mut errors = Vec::new();
    for (key, value) in input {
        let Some(field) = schema.iter().find(|f| f.name == key) else {
            errors.push(FieldError::new(
                key.clone(),
                format!("'{key}' is not a property of {}", kind.spec().display),
            ));
            continue;
        };
        if field.access == Access::ReadOnly {
            continue;
        }
        match check_value(field, value) {
            Ok(()) => {
                let value = match (field.ty, value) {
                    (Ty::Enum(values), Value::String(s)) => Value::String(
                        values
                            .iter()
                            .find(|x| x.eq_ignore_ascii_case(s))
                            .map(|x| x.to_string())
                            .unwrap_or_else(|| s.clone()),
                    ),
                    _ => value.clone(),
                };
                if !value.is_null() {
                    out.insert(key.clone(), value);
                }
            }
            Err(message) => errors.push(FieldError::new(key.clone(), message)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Every required property is present (after defaults and merges).
pub fn check_required(kind: Kind, props: &Map<String, Value>) -> Result<(), Vec<FieldError>> {
    let errors: Vec<FieldError> = fields(kind)
        .iter()
        .filter(|f| f.required && props.get(f.name).is_none_or(Value::is_null))
        .map(|f| FieldError::new(f.name, format!("'{}' is required", f.name)))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// JSON pointers (into `properties`) of the fields that are secret for this resource: they
/// are sealed at rest, left out of GET responses and of the journal's plaintext.
pub fn secret_pointers(kind: Kind, props: &Map<String, Value>) -> Vec<&'static str> {
    match kind {
        Kind::Subscription => vec!["/primaryKey", "/secondaryKey"],
        Kind::NamedValue if props.get("secret").and_then(Value::as_bool) == Some(true) => {
            vec!["/value"]
        }
        Kind::Certificate => vec!["/privateKey", "/password", "/data"],
        Kind::Logger => vec!["/credentials"],
        Kind::Backend => vec!["/proxy/password"],
        Kind::IdentityProvider | Kind::OpenIdConnectProvider => vec!["/clientSecret"],
        Kind::AuthorizationServer => vec![
            "/clientSecret",
            "/resourceOwnerUsername",
            "/resourceOwnerPassword",
        ],
        Kind::Cache => vec!["/connectionString"],
        Kind::PortalSetting => vec!["/validationKey"],
        Kind::TenantAccess | Kind::Gateway => vec!["/primaryKey", "/secondaryKey"],
        _ => vec![],
    }
}

/// The fields of a kind that are secret in some of its resources (a named value's `/value`
/// when `secret` is true): where an entry written before a field became secret may hold it.
pub fn possible_secret_pointers(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::NamedValue => &["/value"],
        _ => &[],
    }
}

/// Fields stored for the server's own use and never rendered (besides secrets).
pub fn hidden_fields(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::User => &["passwordHash", "password"],
        Kind::Certificate => &["privateKey", "password", "data", "certificatePem"],
        Kind::Subscription => &["primaryKey", "secondaryKey"],
        Kind::Logger => &["credentials"],
        Kind::IdentityProvider | Kind::OpenIdConnectProvider => &["clientSecret"],
        Kind::AuthorizationServer => &[
            "clientSecret",
            "resourceOwnerUsername",
            "resourceOwnerPassword",
        ],
        Kind::Cache => &["connectionString"],
        Kind::PortalSetting => &["validationKey"],
        Kind::TenantAccess | Kind::Gateway => &["primaryKey", "secondaryKey"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn input_checks() {
        let ok = check_input(
            Kind::Api,
            &obj(json!({"displayName": "Echo", "path": "echo", "isOnline": true, "type": "HTTP"})),
        )
        .unwrap();
        assert!(!ok.contains_key("isOnline"));
        assert_eq!(ok["type"], "http");
        let errs = check_input(Kind::Api, &obj(json!({"displayName": 5, "bogus": 1}))).unwrap_err();
        assert_eq!(errs.len(), 2);
        let errs = check_required(Kind::Api, &obj(json!({"displayName": "x"}))).unwrap_err();
        assert_eq!(errs[0].target, "path");
        let errs =
            check_input(Kind::Tag, &obj(json!({"displayName": "x".repeat(161)}))).unwrap_err();
        assert!(errs[0].message.contains("between 1 and 160"));
    }
}
