//! Policy documents as APIM users write them: accepted with their structure, or refused with
//! the line, the column and the reason.

use gatehouse_policy::doc::{NoResolver, check_fragment};
use gatehouse_policy::policies::{control::Choose, headers::SetHeader, request::ForwardRequest};
use gatehouse_policy::{Resolver, Section, parse_document};
use proptest::prelude::*;

struct Values;

impl Resolver for Values {
    fn named_value(&self, name: &str) -> Option<String> {
        match name {
            "backend-host" => Some("https://eastus.example.com".into()),
            "tier-header" => Some("x-tier".into()),
            _ => None,
        }
    }
    fn fragment(&self, id: &str) -> Option<(String, String)> {
        (id == "common").then(|| {
            (
                r#"<fragment><set-header name="x-common" exists-action="override"><value>1</value></set-header></fragment>"#.into(),
                "xml".into(),
            )
        })
    }
}

const REGIONAL: &str = r#"<policies>
  <inbound>
    <base />
    <choose>
      <when condition="@("West US".Equals(context.Deployment.Region, StringComparison.OrdinalIgnoreCase))">
        <set-backend-service base-url="http://contoso-backend-us.com/" />
      </when>
      <when condition="@(context.Deployment.Region == "East Asia")">
        <set-backend-service base-url="http://contoso-backend-asia.com/" />
      </when>
      <otherwise>
        <set-backend-service base-url="{{backend-host}}" />
      </otherwise>
    </choose>
    <rate-limit-by-key calls="10" renewal-period="60" counter-key="@(context.Request.IpAddress)" />
    <include-fragment fragment-id="common" />
    <set-header name="{{tier-header}}" exists-action="override"><value>@(context.Subscription?.Name ?? "none")</value></set-header>
  </inbound>
  <backend><forward-request timeout="20" /></backend>
  <outbound><base /><set-header name="x-powered-by" exists-action="delete" /></outbound>
  <on-error><set-status code="500" reason="oops" /></on-error>
</policies>"#;

#[test]
fn a_realistic_document_parses() {
    let doc = match parse_document(REGIONAL, "rawxml", &Values) {
        Ok(d) => d,
        Err(e) => {
            // `?.` is outside the subset: it must say so, with its position.
            assert!(
                e.message.contains("'?'") || e.message.contains("unexpected"),
                "{e}"
            );
            let fixed = REGIONAL.replace("context.Subscription?.Name", "context.Subscription.Name");
            parse_document(&fixed, "rawxml", &Values).unwrap()
        }
    };
    let inbound = doc.section(Section::Inbound).unwrap();
    assert!(inbound[0].is_base());
    assert!(inbound[1].policy_as::<Choose>().is_some());
    assert_eq!(
        inbound[3].name, "set-header",
        "the fragment's policy is inlined"
    );
    let header = inbound[4].policy_as::<SetHeader>().expect("set-header");
    assert_eq!(header.name, "x-tier", "named value substituted");
    let forward = doc.section(Section::Backend).unwrap()[0]
        .policy_as::<ForwardRequest>()
        .expect("forward-request");
    assert_eq!(forward.0.timeout_secs, 20);
}

#[test]
fn bad_documents_say_where_and_why() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "<policies><inbound><foo/></inbound></policies>",
            "<foo> is not a policy",
            "line 1, column 20",
        ),
        (
            "<policies><inbound><xsl-transform /></inbound></policies>",
            "policy 'xsl-transform' is not supported",
            "column 20",
        ),
        (
            "<policies><outbound><rate-limit calls=\"1\" renewal-period=\"1\"/></outbound></policies>",
            "not allowed in <outbound>",
            "column 21",
        ),
        (
            "<policies><inbound><rate-limit calls=\"ten\" renewal-period=\"1\"/></inbound></policies>",
            "'calls' must be a whole number",
            "column 20",
        ),
        (
            "<policies><inbound><rate-limit calls=\"1\" renewal-period=\"301\"/></inbound></policies>",
            "at most 300",
            "",
        ),
        (
            "<policies><inbound><set-header name=\"a\" exists-action=\"maybe\"><value>1</value></set-header></inbound></policies>",
            "exists-action",
            "",
        ),
        (
            "<policies><inbound><set-header name=\"a\"><value>@(context.Nope)</value></set-header></inbound></policies>",
            "context.Nope is not a member",
            "column 41",
        ),
        (
            "<policies><inbound><set-header name=\"a\"><value>{{missing}}</value></set-header></inbound></policies>",
            "the named value 'missing' does not exist",
            "",
        ),
        (
            "<policies><inbound><include-fragment fragment-id=\"nope\"/></inbound></policies>",
            "the policy fragment 'nope' does not exist",
            "",
        ),
        (
            "<policies><inbound><set-status code=\"999\"/></inbound></policies>",
            "HTTP status",
            "",
        ),
        (
            "<policies><inbound><choose><otherwise/></choose></inbound></policies>",
            "at least one <when>",
            "",
        ),
        (
            "<policies><inbound><set-header name=\"a\" color=\"red\"><value>1</value></set-header></inbound></policies>",
            "has no attribute 'color'",
            "",
        ),
        (
            "<policies><inbound><base/><base/></inbound></policies>",
            "more than once",
            "",
        ),
        ("<policies><inbound>", "not well-formed", "line 1"),
        ("<policy/>", "root element must be <policies>", ""),
    ];
    for (xml, says, at) in cases {
        let e = parse_document(xml, "rawxml", &Values).expect_err(xml);
        let text = e.to_string();
        assert!(text.contains(says), "{xml}\n→ {text}");
        assert!(text.contains(at), "{xml}\n→ {text}");
    }
}

#[test]
fn xml_and_rawxml_formats() {
    let raw = r#"<policies><inbound><choose><when condition="@(1 < 2 && true)"><set-status code="204"/></when></choose></inbound></policies>"#;
    assert!(parse_document(raw, "rawxml", &NoResolver).is_ok());
    assert!(
        parse_document(raw, "xml", &NoResolver).is_err(),
        "plain xml must be escaped"
    );
    let escaped = raw.replace("1 < 2 && true", "1 &lt; 2 &amp;&amp; true");
    assert!(parse_document(&escaped, "xml", &NoResolver).is_ok());
}

#[test]
fn fragments() {
    assert!(
        check_fragment(
            "<fragment><set-header name=\"a\" exists-action=\"delete\"/></fragment>",
            "xml",
            &NoResolver
        )
        .is_ok()
    );
    assert!(
        check_fragment(
            "<fragment><forward-request/></fragment>",
            "xml",
            &NoResolver
        )
        .is_ok()
    );
    let e = check_fragment("<policies/>", "xml", &NoResolver).unwrap_err();
    assert!(e.message.contains("<fragment>"), "{e}");
    let e = check_fragment("<fragment><nope/></fragment>", "xml", &NoResolver).unwrap_err();
    assert!(e.message.contains("<nope> is not a policy"), "{e}");
}

proptest! {
    #[test]
    fn the_document_parser_never_panics(doc in "(<|>|/|=|\"|@\\(|@\\{|\\)|\\}|policies|inbound|outbound|set-header|choose|when|condition|value|name| |[a-z0-9])*") {
        let _ = parse_document(&doc, "rawxml", &Values);
        let _ = parse_document(&doc, "xml", &Values);
        let _ = check_fragment(&doc, "rawxml", &Values);
    }
}

#[test]
fn a_secret_named_value_never_appears_in_an_error() {
    struct Secret;
    impl Resolver for Secret {
        fn named_value(&self, _: &str) -> Option<String> {
            Some("TOPSECRET\" +".into())
        }
        fn fragment(&self, _: &str) -> Option<(String, String)> {
            None
        }
    }
    let xml = r#"<policies><inbound><set-header name="a"><value>@("{{key}}" + 1 +)</value></set-header></inbound></policies>"#;
    let e = parse_document(xml, "rawxml", &Secret)
        .unwrap_err()
        .to_string();
    assert!(!e.contains("TOPSECRET"), "{e}");
    assert!(e.contains("{{key}}"), "{e}");
}

/// The chains the gateway may forward as it does without policies: inbound only checks the
/// request, the backend section forwards it plainly, outbound and on-error run nothing.
#[test]
fn plain_forward_only_when_nothing_changes_the_request_or_the_response() {
    use gatehouse_policy::exec::{Chain, plain_forward};
    let doc = |xml: &str| parse_document(xml, "rawxml", &Values).unwrap_or_else(|e| panic!("{e}"));
    let api = |inbound: &str, backend: &str, outbound: &str| {
        doc(&format!(
            "<policies><inbound><base />{inbound}</inbound><backend>{backend}</backend>\
             <outbound><base />{outbound}</outbound><on-error><base /></on-error></policies>"
        ))
    };
    // The timeout of the forward, when the chain qualifies.
    let plain = |levels: [Option<&gatehouse_policy::Document>; 4]| {
        plain_forward(&Chain { levels }).map(|f| f.timeout_secs)
    };
    let limited = api(
        r#"<rate-limit calls="5" renewal-period="60" />"#,
        "<base />",
        "",
    );
    assert_eq!(plain([None, None, Some(&limited), None]), Some(300));
    let checks = api(
        r#"<check-header name="x-a" failed-check-httpcode="401" failed-check-error-message="no" ignore-case="true" />
           <ip-filter action="allow"><address>127.0.0.1</address></ip-filter>
           <set-variable name="v" value="1" />
           <choose><when condition="@(context.Request.Headers.ContainsKey("x-b"))"><return-response><set-status code="403" reason="no" /></return-response></when></choose>
           <quota calls="100" renewal-period="3600" />"#,
        r#"<forward-request timeout="7" />"#,
        "",
    );
    assert_eq!(plain([None, None, Some(&checks), None]), Some(7));
    let global = doc(
        "<policies><inbound><rate-limit calls=\"9\" renewal-period=\"1\" /></inbound><backend><forward-request /></backend></policies>",
    );
    assert_eq!(
        plain([Some(&global), None, Some(&limited), None]),
        Some(300),
        "global inbound reached through <base />"
    );

    // Anything that changes what is forwarded or answered keeps the full path.
    let refused = [
        api(
            r#"<set-header name="x-a" exists-action="override"><value>1</value></set-header>"#,
            "<base />",
            "",
        ),
        api(
            r#"<rate-limit calls="5" renewal-period="60" remaining-calls-header-name="x-left" />"#,
            "<base />",
            "",
        ),
        api(
            r#"<choose><when condition="@(true)"><rewrite-uri template="/x" /></when></choose>"#,
            "<base />",
            "",
        ),
        api(
            r#"<cors><allowed-origins><origin>*</origin></allowed-origins></cors>"#,
            "<base />",
            "",
        ),
        api("", r#"<forward-request follow-redirects="true" />"#, ""),
        api(
            "",
            "<base />",
            r#"<set-header name="x-b" exists-action="override"><value>1</value></set-header>"#,
        ),
    ];
    for (i, d) in refused.iter().enumerate() {
        assert_eq!(plain([None, None, Some(d), None]), None, "case {i}");
    }
    let changes_globally = doc(
        "<policies><inbound><set-query-parameter name=\"a\" exists-action=\"override\"><value>1</value></set-query-parameter></inbound></policies>",
    );
    assert_eq!(
        plain([Some(&changes_globally), None, Some(&limited), None]),
        None
    );
    let without_base = api("", "<base />", "");
    let without_base_inbound = doc(
        "<policies><inbound><rate-limit calls=\"5\" renewal-period=\"60\" /></inbound><backend><base /></backend></policies>",
    );
    assert_eq!(
        plain([
            Some(&changes_globally),
            None,
            Some(&without_base_inbound),
            None
        ]),
        Some(300),
        "a scope without <base /> does not run the global inbound"
    );
    assert_eq!(plain([None, None, Some(&without_base), None]), Some(300));

    // Only limits per subscription that just count need no exchange at all.
    let counted = |levels: [Option<&gatehouse_policy::Document>; 4]| {
        gatehouse_policy::exec::counted_forward(&Chain { levels }).map(|f| f.forward.timeout_secs)
    };
    assert_eq!(
        counted([Some(&global), None, Some(&limited), None]),
        Some(300)
    );
    assert_eq!(counted([None, None, Some(&without_base), None]), Some(300));
    assert_eq!(
        counted([None, None, Some(&checks), None]),
        None,
        "check-header"
    );
    let by_key = api(
        r#"<rate-limit-by-key calls="5" renewal-period="60" counter-key="@(context.Request.IpAddress)" />"#,
        "<base />",
        "",
    );
    assert_eq!(plain([None, None, Some(&by_key), None]), Some(300));
    assert_eq!(
        counted([None, None, Some(&by_key), None]),
        None,
        "a key expression"
    );
    assert_eq!(
        counted([Some(&changes_globally), None, Some(&limited), None]),
        None
    );
}
