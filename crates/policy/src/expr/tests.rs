use super::*;
use std::collections::HashMap;

struct TestEnv {
    headers: HashMap<String, Vec<String>>,
    vars: HashMap<String, V>,
}

impl Env for TestEnv {
    fn member(&self, path: &str) -> Result<V, EvalError> {
        Ok(match path {
            "Request.Method" => V::Str("GET".into()),
            "Deployment.Region" => V::Str("eastus".into()),
            "Response.StatusCode" => V::Int(200),
            p => V::Ctx(p.into()),
        })
    }
    fn lookup(&self, map: &str, key: &str) -> Option<V> {
        match map {
            "Request.Headers" => self
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| V::List(v.iter().cloned().map(V::Str).collect())),
            "Variables" => self.vars.get(key).cloned(),
            _ => None,
        }
    }
    fn body(&self, _: &str) -> Result<String, EvalError> {
        Ok(r#"{"id": 7, "name": "x"}"#.into())
    }
}

fn env() -> TestEnv {
    TestEnv {
        headers: [("X-Tier".to_string(), vec!["gold".to_string()])].into(),
        vars: [("n".to_string(), V::Int(3))].into(),
    }
}

fn run(src: &str) -> Result<V, String> {
    let code = parse(src).map_err(|e| format!("parse: {e}"))?;
    eval_code(&code, &env()).map_err(|e| format!("eval: {e}"))
}

#[test]
fn expressions_evaluate() {
    let cases: &[(&str, V)] = &[
        ("@(1 + 2 * 3)", V::Int(7)),
        ("@(\"a\" + 1)", V::Str("a1".into())),
        (
            "@(context.Request.Method == \"GET\" && !false)",
            V::Bool(true),
        ),
        (
            "@(context.Request.Headers.GetValueOrDefault(\"x-tier\", \"none\"))",
            V::Str("gold".into()),
        ),
        (
            "@(context.Request.Headers.GetValueOrDefault(\"x-other\", \"none\"))",
            V::Str("none".into()),
        ),
        (
            "@(context.Request.Headers[\"X-Tier\"][0].ToUpper())",
            V::Str("GOLD".into()),
        ),
        (
            "@(context.Variables.GetValueOrDefault<int>(\"n\", 0) > 2 ? \"big\" : \"small\")",
            V::Str("big".into()),
        ),
        (
            "@((string)context.Variables.GetValueOrDefault(\"missing\") ?? \"d\")",
            V::Str("d".into()),
        ),
        (
            "@($\"region {context.Deployment.Region}!\")",
            V::Str("region eastus!".into()),
        ),
        ("@(\"a,b,c\".Split(',')[1])", V::Str("b".into())),
        ("@(\"Hello\".Substring(1, 3))", V::Str("ell".into())),
        (
            "@(\"ABC\".Equals(\"abc\", StringComparison.OrdinalIgnoreCase))",
            V::Bool(true),
        ),
        ("@(string.IsNullOrEmpty(\"\"))", V::Bool(true)),
        ("@(string.Join(\"-\", \"a\", \"b\"))", V::Str("a-b".into())),
        ("@(int.Parse(\"42\") + 1)", V::Int(43)),
        (
            "@(Encoding.UTF8.GetString(Convert.FromBase64String(\"aGk=\")))",
            V::Str("hi".into()),
        ),
        (
            "@(Convert.ToBase64String(Encoding.UTF8.GetBytes(\"hi\")))",
            V::Str("aGk=".into()),
        ),
        (
            "@(context.Request.Body.As<JObject>(preserveContent: true)[\"name\"].ToString())",
            V::Str("x".into()),
        ),
        (
            "@(context.Request.Body.As<JObject>().Value<int>(\"id\"))",
            V::Int(7),
        ),
        (
            "@(DateTime.UtcNow.AddSeconds(10) > DateTime.UtcNow)",
            V::Bool(true),
        ),
        (
            "@{ var x = 2; if (x > 1) { return \"yes\"; } else { return \"no\"; } }",
            V::Str("yes".into()),
        ),
        (
            "@{ var s = 0; foreach (var p in \"1,2,3\".Split(',')) { s += int.Parse(p); } return s; }",
            V::Int(6),
        ),
        (
            "@(\"Basic dXNlcjpwYXNz\".AsBasic().UserId)",
            V::Json(serde_json::json!("user")),
        ),
        (
            "@(context.Variables.GetValueOrDefault(\"none\")?.ToString() ?? \"null\")",
            V::Str("null".into()),
        ),
        ("@(context.Request.Method?.ToLower())", V::Str("get".into())),
        (
            "@{ int n; if (int.TryParse(\"41\", out n)) { return n + 1; } return -1; }",
            V::Int(42),
        ),
        ("@(int.TryParse(\"x\", out var m) ? m : -1)", V::Int(-1)),
        (
            "@(\"Basic !!\".TryParseBasic(out var creds))",
            V::Bool(false),
        ),
        (
            "@(\"Basic dXNlcjpwYXNz\".TryParseBasic(out var c) ? \"ok\" : \"no\")",
            V::Str("ok".into()),
        ),
    ];
    for (src, want) in cases {
        assert_eq!(run(src).as_ref(), Ok(want), "{src}");
    }
}

#[test]
fn bad_expressions_are_refused_at_parse_time_with_a_position() {
    for (src, says) in [
        (
            "@(context.Request.Foo)",
            "context.Request.Foo is not a member",
        ),
        ("@(foo + 1)", "'foo' is not known"),
        ("@(1 +)", "expression expected"),
        ("@(\"abc)", "not closed"),
        ("@{ var x = 1; }", "not all code paths"),
        ("@(new Foo())", "'new' is not supported"),
        ("@(1 2)", "unexpected the number 2"),
        ("@(a => a)", "'a' is not known"),
        ("1 + 2", "written @(…)"),
    ] {
        let e = parse(src).expect_err(src);
        assert!(e.message.contains(says), "{src}: {e}");
    }
    let e = parse("@(1 + foo)").unwrap_err();
    assert_eq!(e.offset, 6, "{e}");
}

#[test]
fn runtime_failures_are_errors_not_panics() {
    for src in [
        "@(1 / 0)",
        "@(int.Parse(\"x\"))",
        "@(context.Variables[\"nope\"])",
        "@(\"ab\".Substring(5))",
        "@(9223372036854775807 + 1)",
        "@(\"x\".Split(',')[3])",
    ] {
        assert!(run(src).unwrap_err().starts_with("eval:"), "{src}");
    }
}

proptest::proptest! {
    #[test]
    fn the_parser_never_panics(s in "@[({][ -~]{0,60}[)}]?") {
        if let Ok(code) = parse(&s) {
            let _ = eval_code(&code, &env());
        }
    }

    #[test]
    fn the_parser_never_panics_on_expression_shaped_input(
        s in "@\\((context|\\.|Request|Headers|GetValueOrDefault|\\(|\\)|\"a\"|1|\\+|==|\\?|:|\\[|\\]|!|&&|\\$\"\\{1\\}\"| )*\\)"
    ) {
        if let Ok(code) = parse(&s) {
            let _ = eval_code(&code, &env());
        }
    }
}
