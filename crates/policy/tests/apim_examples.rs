//! The policy statements of APIM's documentation (reference §4.5), as users paste them: each
//! one compiles in the sections APIM allows it in.

use gatehouse_policy::{Resolver, parse_document};

struct Env;

impl Resolver for Env {
    fn named_value(&self, name: &str) -> Option<String> {
        (name == "backend-url").then(|| "https://backend.contoso.com".to_string())
    }
    fn fragment(&self, id: &str) -> Option<(String, String)> {
        (id == "common").then(|| ("<fragment><set-header name=\"x-common\" exists-action=\"override\"><value>1</value></set-header></fragment>".into(), "xml".into()))
    }
}

fn doc(inbound: &str, backend: &str, outbound: &str) -> String {
    format!(
        "<policies><inbound><base />{inbound}</inbound><backend>{backend}</backend><outbound><base />{outbound}</outbound><on-error><base /></on-error></policies>"
    )
}

const INBOUND: &[&str] = &[
    r#"<rate-limit calls="20" renewal-period="90" remaining-calls-variable-name="remainingCallsPerSubscription"/>"#,
    r#"<rate-limit calls="20" renewal-period="90" retry-after-header-name="x-retry" remaining-calls-header-name="x-remaining" total-calls-header-name="x-total"><api name="echo" calls="10" renewal-period="60"><operation name="get" calls="5" renewal-period="60" /></api></rate-limit>"#,
    r#"<rate-limit-by-key calls="10" renewal-period="60" increment-condition="@(context.Response.StatusCode == 200)" counter-key="@(context.Request.IpAddress)" remaining-calls-variable-name="remainingCallsPerIP"/>"#,
    r#"<quota calls="10000" renewal-period="3600" />"#,
    r#"<quota-by-key calls="10000" renewal-period="3600" increment-condition="@(context.Response.StatusCode >= 200 && context.Response.StatusCode < 400)" counter-key="@(context.Request.IpAddress)" />"#,
    r#"<validate-jwt header-name="Authorization" failed-validation-httpcode="401" failed-validation-error-message="Unauthorized. Access token is missing or invalid."><openid-config url="https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0/.well-known/openid-configuration" /><audiences><audience>api://contoso</audience></audiences><issuers><issuer>https://sts.windows.net/contoso/</issuer></issuers><required-claims><claim name="roles" match="any"><value>Reader</value><value>Writer</value></claim></required-claims></validate-jwt>"#,
    r#"<validate-jwt header-name="Authorization" require-scheme="Bearer"><issuer-signing-keys><key>Y29udG9zby1zZWNyZXQtc2lnbmluZy1rZXktMzJieXRlcw==</key></issuer-signing-keys></validate-jwt>"#,
    r#"<check-header name="Authorization" failed-check-httpcode="401" failed-check-error-message="Not authorized" ignore-case="false"><value>f6dc69a089844cf6b2019bae6d36fac8</value></check-header>"#,
    r#"<ip-filter action="allow"><address>13.66.201.169</address><address-range from="13.66.140.128" to="13.66.140.143" /></ip-filter>"#,
    r#"<set-header name="some header name" exists-action="override"><value>20</value></set-header>"#,
    r#"<set-query-parameter name="api-key" exists-action="skip"><value>12345678901</value></set-query-parameter>"#,
    r#"<rewrite-uri template="/put" copy-unmatched-params="false" />"#,
    r#"<set-backend-service base-url="{{backend-url}}" />"#,
    r#"<set-backend-service backend-id="my-backend" />"#,
    r#"<mock-response status-code="200" content-type="application/json" />"#,
    r#"<return-response><set-status code="401" reason="Unauthorized" /><set-header name="WWW-Authenticate" exists-action="override"><value>Bearer error="invalid_token"</value></set-header></return-response>"#,
    r#"<cors allow-credentials="true"><allowed-origins><origin>https://contoso.com</origin></allowed-origins><allowed-methods preflight-result-max-age="300"><method>GET</method><method>POST</method></allowed-methods><allowed-headers><header>*</header></allowed-headers><expose-headers><header>*</header></expose-headers></cors>"#,
    r#"<cache-lookup vary-by-developer="false" vary-by-developer-groups="false" downstream-caching-type="none" must-revalidate="true" caching-type="internal"><vary-by-query-parameter>version</vary-by-query-parameter></cache-lookup>"#,
    r#"<cache-lookup-value key="@("userprofile-" + context.Variables["enduserid"])" variable-name="userprofile" />"#,
    r#"<choose><when condition="@(context.Variables.GetValueOrDefault<bool>("isMobile"))"><set-query-parameter name="mobile" exists-action="override"><value>true</value></set-query-parameter></when><otherwise><set-query-parameter name="mobile" exists-action="override"><value>false</value></set-query-parameter></otherwise></choose>"#,
    r#"<set-variable name="IsMobile" value="@(context.Request.Headers.GetValueOrDefault("User-Agent","").Contains("iPad") || context.Request.Headers.GetValueOrDefault("User-Agent","").Contains("iPhone"))" />"#,
    r#"<send-request mode="new" response-variable-name="tokenstate" timeout="20" ignore-error="true"><set-url>https://microsoft-apiappec990ad4c76641c6aea22f566efc5a4e.azurewebsites.net/introspection</set-url><set-method>POST</set-method><set-header name="Authorization" exists-action="override"><value>basic dXNlcm5hbWU6cGFzc3dvcmQ=</value></set-header><set-header name="Content-Type" exists-action="override"><value>application/x-www-form-urlencoded</value></set-header><set-body>@($"token={(string)context.Request.Headers.GetValueOrDefault("Authorization","").Split(' ').Last()}")</set-body></send-request>"#,
    r#"<include-fragment fragment-id="common" />"#,
    r#"<trace source="Petstore API" severity="verbose"><message>@(context.RequestId)</message><metadata name="Operation Name" value="New-Order"/></trace>"#,
    r#"<authentication-basic username="{{backend-url}}" password="secret" />"#,
    r#"<json-to-xml apply="always" consider-accept-header="false" />"#,
    r#"<limit-concurrency key="@((string)context.Variables["connectionId"])" max-count="3"><set-header name="x" exists-action="override"><value>1</value></set-header></limit-concurrency>"#,
];

const BACKEND: &[&str] = &[
    r#"<forward-request timeout="60" />"#,
    r#"<forward-request timeout="120" follow-redirects="true" buffer-request-body="true" buffer-response="false" fail-on-error-status-code="false" />"#,
    r#"<retry condition="@(context.Response.StatusCode == 500)" count="10" interval="10" max-interval="100" delta="10" first-fast-retry="false"><forward-request buffer-request-body="true" /></retry>"#,
    r#"<limit-concurrency key="@((string)context.Variables["connectionId"])" max-count="3"><forward-request timeout="120"/></limit-concurrency>"#,
];

const OUTBOUND: &[&str] = &[
    r#"<set-header name="X-Powered-By" exists-action="delete" />"#,
    r#"<cache-store duration="20" />"#,
    r#"<cache-store-value key="@("userprofile-" + context.Variables["enduserid"])" value="@((string)context.Variables["userprofile"])" duration="100000" />"#,
    r#"<set-body>@{ var response = context.Response.Body.As<JObject>(); foreach (var key in new [] {"minutely", "hourly", "daily", "flags"}) { response.Property(key).Remove(); } return response.ToString(); }</set-body>"#,
    r#"<find-and-replace from="notfound" to="found" />"#,
    r#"<xml-to-json kind="direct" apply="always" consider-accept-header="false" />"#,
    r#"<set-status code="200" reason="OK" />"#,
];

#[test]
fn apims_examples_compile() {
    let mut refused = Vec::new();
    for p in INBOUND {
        if let Err(e) = parse_document(&doc(p, "<base />", ""), "rawxml", &Env) {
            refused.push(format!("inbound {p}\n  → {e}"));
        }
    }
    for p in BACKEND {
        if let Err(e) = parse_document(&doc("", p, ""), "rawxml", &Env) {
            refused.push(format!("backend {p}\n  → {e}"));
        }
    }
    for p in OUTBOUND {
        if let Err(e) = parse_document(&doc("", "<base />", p), "rawxml", &Env) {
            refused.push(format!("outbound {p}\n  → {e}"));
        }
    }
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}
