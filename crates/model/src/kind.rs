//! The resource kinds of an instance and where they live in the path tree.
//!
//! Invariant: a kind is identified by its chain of collection names from the service root
//! (`["apis", "operations"]` is an operation). Paths are always relative to the service, so
//! they stay valid when an archive is restored into an instance of another name.

use crate::id::IdRule;

/// Every resource type the management API knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Api,
    Operation,
    GlobalPolicy,
    ProductPolicy,
    ApiPolicy,
    OperationPolicy,
    Product,
    ProductApi,
    ProductGroup,
    ProductTag,
    Subscription,
    User,
    Group,
    GroupUser,
    NamedValue,
    Backend,
    Certificate,
    PolicyFragment,
    Tag,
    ApiTag,
    OperationTag,
    ApiVersionSet,
    Logger,
    Diagnostic,
    ApiDiagnostic,
    ApiSchema,
    GlobalSchema,
    ApiRelease,
    ApiIssue,
    ApiWiki,
    ProductWiki,
    IdentityProvider,
    AuthorizationServer,
    OpenIdConnectProvider,
    Cache,
    EmailTemplate,
    PortalSetting,
    TenantAccess,
    Gateway,
    GatewayApi,
    GatewayHostnameConfiguration,
    GatewayCertificateAuthority,
    ContentType,
    ContentItem,
    PortalRevision,
}

/// Static facts about a kind.
#[derive(Debug)]
pub struct KindSpec {
    pub kind: Kind,
    /// Collection names from the service root, e.g. `["apis", "operations"]`.
    pub collections: &'static [&'static str],
    /// The stable name used in the store and the journal.
    pub name: &'static str,
    /// ARM resource type suffix below `Microsoft.ApiManagement/service/`.
    pub arm_type: &'static str,
    /// Human name used in messages ("Api not found.").
    pub display: &'static str,
    pub id_rule: IdRule,
    /// For link kinds: the kind of the entity the link points at (its id is the link's id).
    pub link_target: Option<Kind>,
}

const COMMON: IdRule = IdRule::Common { max: 80 };

pub static KINDS: &[KindSpec] = &[
    KindSpec {
        kind: Kind::Api,
        collections: &["apis"],
        name: "api",
        arm_type: "apis",
        display: "Api",
        id_rule: IdRule::Api,
        link_target: None,
    },
    KindSpec {
        kind: Kind::Operation,
        collections: &["apis", "operations"],
        name: "operation",
        arm_type: "apis/operations",
        display: "Operation",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::GlobalPolicy,
        collections: &["policies"],
        name: "globalPolicy",
        arm_type: "policies",
        display: "Policy",
        id_rule: IdRule::Policy,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ProductPolicy,
        collections: &["products", "policies"],
        name: "productPolicy",
        arm_type: "products/policies",
        display: "Policy",
        id_rule: IdRule::Policy,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ApiPolicy,
        collections: &["apis", "policies"],
        name: "apiPolicy",
        arm_type: "apis/policies",
        display: "Policy",
        id_rule: IdRule::Policy,
        link_target: None,
    },
    KindSpec {
        kind: Kind::OperationPolicy,
        collections: &["apis", "operations", "policies"],
        name: "operationPolicy",
        arm_type: "apis/operations/policies",
        display: "Policy",
        id_rule: IdRule::Policy,
        link_target: None,
    },
    KindSpec {
        kind: Kind::Product,
        collections: &["products"],
        name: "product",
        arm_type: "products",
        display: "Product",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
    KindSpec {
        kind: Kind::ProductApi,
        collections: &["products", "apis"],
        name: "productApi",
        arm_type: "apis",
        display: "Api",
        id_rule: IdRule::Api,
        link_target: Some(Kind::Api),
    },
    KindSpec {
        kind: Kind::ProductGroup,
        collections: &["products", "groups"],
        name: "productGroup",
        arm_type: "groups",
        display: "Group",
        id_rule: IdRule::Common { max: 256 },
        link_target: Some(Kind::Group),
    },
    KindSpec {
        kind: Kind::ProductTag,
        collections: &["products", "tags"],
        name: "productTag",
        arm_type: "tags",
        display: "Tag",
        id_rule: COMMON,
        link_target: Some(Kind::Tag),
    },
    KindSpec {
        kind: Kind::Subscription,
        collections: &["subscriptions"],
        name: "subscription",
        arm_type: "subscriptions",
        display: "Subscription",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
    KindSpec {
        kind: Kind::User,
        collections: &["users"],
        name: "user",
        arm_type: "users",
        display: "User",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::Group,
        collections: &["groups"],
        name: "group",
        arm_type: "groups",
        display: "Group",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
    KindSpec {
        kind: Kind::GroupUser,
        collections: &["groups", "users"],
        name: "groupUser",
        arm_type: "users",
        display: "User",
        id_rule: COMMON,
        link_target: Some(Kind::User),
    },
    KindSpec {
        kind: Kind::NamedValue,
        collections: &["namedValues"],
        name: "namedValue",
        arm_type: "namedValues",
        display: "NamedValue",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
    KindSpec {
        kind: Kind::Backend,
        collections: &["backends"],
        name: "backend",
        arm_type: "backends",
        display: "Backend",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::Certificate,
        collections: &["certificates"],
        name: "certificate",
        arm_type: "certificates",
        display: "Certificate",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::PolicyFragment,
        collections: &["policyFragments"],
        name: "policyFragment",
        arm_type: "policyFragments",
        display: "PolicyFragment",
        id_rule: IdRule::Fragment,
        link_target: None,
    },
    KindSpec {
        kind: Kind::Tag,
        collections: &["tags"],
        name: "tag",
        arm_type: "tags",
        display: "Tag",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ApiTag,
        collections: &["apis", "tags"],
        name: "apiTag",
        arm_type: "tags",
        display: "Tag",
        id_rule: COMMON,
        link_target: Some(Kind::Tag),
    },
    KindSpec {
        kind: Kind::OperationTag,
        collections: &["apis", "operations", "tags"],
        name: "operationTag",
        arm_type: "tags",
        display: "Tag",
        id_rule: COMMON,
        link_target: Some(Kind::Tag),
    },
    KindSpec {
        kind: Kind::ApiVersionSet,
        collections: &["apiVersionSets"],
        name: "apiVersionSet",
        arm_type: "apiVersionSets",
        display: "ApiVersionSet",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::Logger,
        collections: &["loggers"],
        name: "logger",
        arm_type: "loggers",
        display: "Logger",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
    KindSpec {
        kind: Kind::Diagnostic,
        collections: &["diagnostics"],
        name: "diagnostic",
        arm_type: "diagnostics",
        display: "Diagnostic",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ApiDiagnostic,
        collections: &["apis", "diagnostics"],
        name: "apiDiagnostic",
        arm_type: "apis/diagnostics",
        display: "Diagnostic",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ApiSchema,
        collections: &["apis", "schemas"],
        name: "apiSchema",
        arm_type: "apis/schemas",
        display: "Schema",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::GlobalSchema,
        collections: &["schemas"],
        name: "schema",
        arm_type: "schemas",
        display: "Schema",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ApiRelease,
        collections: &["apis", "releases"],
        name: "apiRelease",
        arm_type: "apis/releases",
        display: "ApiRelease",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ApiIssue,
        collections: &["apis", "issues"],
        name: "apiIssue",
        arm_type: "apis/issues",
        display: "Issue",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
    KindSpec {
        kind: Kind::ApiWiki,
        collections: &["apis", "wikis"],
        name: "apiWiki",
        arm_type: "apis/wikis",
        display: "Wiki",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ProductWiki,
        collections: &["products", "wikis"],
        name: "productWiki",
        arm_type: "products/wikis",
        display: "Wiki",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::IdentityProvider,
        collections: &["identityProviders"],
        name: "identityProvider",
        arm_type: "identityProviders",
        display: "IdentityProvider",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::AuthorizationServer,
        collections: &["authorizationServers"],
        name: "authorizationServer",
        arm_type: "authorizationServers",
        display: "AuthorizationServer",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::OpenIdConnectProvider,
        collections: &["openidConnectProviders"],
        name: "openidConnectProvider",
        arm_type: "openidConnectProviders",
        display: "OpenIdConnectProvider",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
    KindSpec {
        kind: Kind::Cache,
        collections: &["caches"],
        name: "cache",
        arm_type: "caches",
        display: "Cache",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::EmailTemplate,
        collections: &["templates"],
        name: "emailTemplate",
        arm_type: "templates",
        display: "EmailTemplate",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::PortalSetting,
        collections: &["portalsettings"],
        name: "portalSetting",
        arm_type: "portalsettings",
        display: "PortalSettings",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::TenantAccess,
        collections: &["tenant"],
        name: "tenantAccess",
        arm_type: "tenant",
        display: "AccessInformation",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::Gateway,
        collections: &["gateways"],
        name: "gateway",
        arm_type: "gateways",
        display: "Gateway",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::GatewayApi,
        collections: &["gateways", "apis"],
        name: "gatewayApi",
        arm_type: "apis",
        display: "Api",
        id_rule: IdRule::Api,
        link_target: Some(Kind::Api),
    },
    KindSpec {
        kind: Kind::GatewayHostnameConfiguration,
        collections: &["gateways", "hostnameConfigurations"],
        name: "gatewayHostnameConfiguration",
        arm_type: "gateways/hostnameConfigurations",
        display: "GatewayHostnameConfiguration",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::GatewayCertificateAuthority,
        collections: &["gateways", "certificateAuthorities"],
        name: "gatewayCertificateAuthority",
        arm_type: "gateways/certificateAuthorities",
        display: "GatewayCertificateAuthority",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ContentType,
        collections: &["contentTypes"],
        name: "contentType",
        arm_type: "contentTypes",
        display: "ContentType",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::ContentItem,
        collections: &["contentTypes", "contentItems"],
        name: "contentItem",
        arm_type: "contentTypes/contentItems",
        display: "ContentItem",
        id_rule: COMMON,
        link_target: None,
    },
    KindSpec {
        kind: Kind::PortalRevision,
        collections: &["portalRevisions"],
        name: "portalRevision",
        arm_type: "portalRevisions",
        display: "PortalRevision",
        id_rule: IdRule::Common { max: 256 },
        link_target: None,
    },
];

impl Kind {
    pub fn spec(self) -> &'static KindSpec {
        KINDS
            .iter()
            .find(|s| s.kind == self)
            .expect("every kind has a spec")
    }

    /// The stable store name (`"api"`, `"productApi"`, …).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        KINDS.iter().find(|s| s.name == name).map(|s| s.kind)
    }

    /// Finds the kind whose collection chain matches, ignoring ASCII case as ARM does.
    pub fn from_collections(chain: &[&str]) -> Option<Kind> {
        KINDS
            .iter()
            .find(|s| {
                s.collections.len() == chain.len()
                    && s.collections
                        .iter()
                        .zip(chain)
                        .all(|(a, b)| a.eq_ignore_ascii_case(b))
            })
            .map(|s| s.kind)
    }

    pub fn is_link(self) -> bool {
        self.spec().link_target.is_some()
    }

    pub fn is_policy(self) -> bool {
        matches!(
            self,
            Kind::GlobalPolicy | Kind::ProductPolicy | Kind::ApiPolicy | Kind::OperationPolicy
        )
    }

    pub fn collection(self) -> &'static str {
        self.spec().collections.last().expect("non-empty chain")
    }
}
