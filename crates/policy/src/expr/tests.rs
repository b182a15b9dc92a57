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
                .map(|(_, v)| V::list(v.iter().cloned().map(V::Str).collect())),
            "Variables" => self.vars.get(key).cloned(),
            _ => None,
        }
    }
    fn entries(&self, map: &str) -> Vec<(String, V)> {
        match map {
            "Request.Headers" => self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), V::list(v.iter().cloned().map(V::Str).collect())))
                .collect(),
            _ => Vec::new(),
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
            V::json(serde_json::json!("user")),
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
        ("@(new Foo())", "'Foo' is not known"),
        (
            "@(System.IO.File.ReadAllText(\"x\"))",
            "'File' is not known",
        ),
        ("@(new HttpClient())", "'HttpClient' is not known"),
        (
            "@(Environment.GetEnvironmentVariable(\"x\"))",
            "'Environment' is not known",
        ),
        (
            "@(new X509Certificate2())",
            "allowed in APIM policy expressions but not supported",
        ),
        ("@(\"a\".Frobnicate())", "'Frobnicate' is not a member"),
        ("@(typeof(string))", "'typeof' is not supported"),
        (
            "@{ lock (x) { } return 1; }",
            "'lock' statements are not supported",
        ),
        ("@(1 2)", "unexpected the number 2"),
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

/// Evaluates and gives the result as text (as a policy writes it into a header or body).
fn text(src: &str) -> String {
    match run(src) {
        Ok(v) => v.text(),
        Err(e) => format!("ERROR {e}"),
    }
}

#[test]
fn the_dotnet_surface_real_policies_use_evaluates() {
    let cases: &[(&str, &str)] = &[
        // new, JSON building and mutation through references
        (
            r#"@(new JObject(new JProperty("a", 1), new JProperty("b", "x")).ToString(Newtonsoft.Json.Formatting.None))"#,
            r#"{"a":1,"b":"x"}"#,
        ),
        (r#"@(new JArray(1, 2, 3).Count)"#, "3"),
        (
            r#"@{ var body = context.Request.Body.As<JObject>(); body["extra"] = "y"; body.Remove("name"); return body.ToString(Formatting.None); }"#,
            r#"{"id":7,"extra":"y"}"#,
        ),
        (
            r#"@{ var o = JObject.Parse("{\"items\":[{\"a\":1,\"s\":\"x\"},{\"a\":2,\"s\":\"y\"}]}"); foreach (JObject item in o["items"]) { item.Remove("s"); item["b"] = (int)item["a"] * 10; } return o.ToString(Formatting.None); }"#,
            r#"{"items":[{"a":1,"b":10},{"a":2,"b":20}]}"#,
        ),
        (
            r#"@(JsonConvert.SerializeObject(new { id = 1, name = "n", tags = new[] { "a", "b" } }))"#,
            r#"{"id":1,"name":"n","tags":["a","b"]}"#,
        ),
        (
            r#"@((string)JObject.Parse("{\"a\":{\"b\":[1,{\"c\":\"deep\"}]}}").SelectToken("$.a.b[1].c"))"#,
            "deep",
        ),
        (r#"@(JObject.Parse("{\"a\":1}").Property("a").Name)"#, "a"),
        (
            r#"@(JObject.Parse("{\"a\":1}")["a"].Type == JTokenType.Integer)"#,
            "True",
        ),
        (
            r#"@(JToken.Parse("[1,2]").ToString(Formatting.None))"#,
            "[1,2]",
        ),
        // lambdas and LINQ
        (
            r#"@(string.Join(",", new[] { 3, 1, 2 }.OrderBy(x => x).Select(x => x * 2)))"#,
            "2,4,6",
        ),
        (
            r#"@(new List<int> { 1, 2, 3, 4 }.Where(x => x % 2 == 0).Sum())"#,
            "6",
        ),
        (
            r#"@(new[] { "a", "b" }.Any(s => s == "b") && new[] { 1, 2 }.All(n => n > 0))"#,
            "True",
        ),
        (
            r#"@(JArray.Parse("[{\"n\":\"x\",\"v\":1},{\"n\":\"y\",\"v\":5}]").First(t => (int)t["v"] > 2)["n"].ToString())"#,
            "y",
        ),
        (
            r#"@(JArray.Parse("[1,2,3]").Select(t => (int)t).Max())"#,
            "3",
        ),
        (r#"@(new[] { "b", "a", "b" }.Distinct().Count())"#, "2"),
        (r#"@(new[] { 1, 2, 3 }.Aggregate((a, b) => a * b))"#, "6"),
        (
            r#"@(new[] { "x=1", "y=2" }.Select(p => p.Split('=')).ToDictionary(p => p[0], p => p[1])["y"])"#,
            "2",
        ),
        (
            r#"@(string.Join("|", new[] { 5, 1, 3 }.OrderByDescending(x => x).Skip(1).Take(1)))"#,
            "3",
        ),
        (
            r#"@(context.Request.Headers.Any(h => h.Key == "X-Tier"))"#,
            "True",
        ),
        (
            r#"@(string.Join(",", new[] { "a", "b" }.Concat(new[] { "c" }).Reverse()))"#,
            "c,b,a",
        ),
        // statements
        (
            r#"@{ int total = 0; for (int i = 0; i < 5; i++) { if (i == 3) { continue; } total += i; } return total; }"#,
            "7",
        ),
        (
            r#"@{ var n = 0; while (true) { n++; if (n > 4) break; } return n; }"#,
            "5",
        ),
        (
            r#"@{ switch (context.Request.Method) { case "POST": return "p"; case "GET": return "g"; default: return "d"; } }"#,
            "g",
        ),
        (
            r#"@{ try { return int.Parse("x").ToString(); } catch (FormatException e) { return "bad: " + (e.Message.Length > 0); } }"#,
            "bad: True",
        ),
        (
            r#"@{ try { throw new InvalidOperationException("boom"); } catch (Exception ex) { return ex.Message; } }"#,
            "boom",
        ),
        (
            r#"@{ string Twice(string s) => s + s; return Twice("ab"); }"#,
            "abab",
        ),
        (
            r#"@{ return Fact(5); int Fact(int n) { return n <= 1 ? 1 : n * Fact(n - 1); } }"#,
            "120",
        ),
        (
            r#"@{ object o = context.Request.Body.As<JObject>(); if (o is JObject j) { return (string)j["name"]; } return "no"; }"#,
            "x",
        ),
        (
            r#"@((context.Variables["n"] as string) ?? "not a string")"#,
            "not a string",
        ),
        (
            r#"@{ var d = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase) { { "A", "1" }, ["b"] = "2" }; return d["a"] + d["B"]; }"#,
            "12",
        ),
        (
            r#"@{ var sb = new StringBuilder(); sb.Append("a").Append(1).AppendLine(); return sb.ToString().Trim() + sb.Length; }"#,
            "a14",
        ),
        // strings and formatting
        (
            r#"@("abc".Equals("ABC", StringComparison.OrdinalIgnoreCase))"#,
            "True",
        ),
        (
            r#"@("a,,b".Split(new[] { ',' }, StringSplitOptions.RemoveEmptyEntries).Length)"#,
            "2",
        ),
        (r#"@("7".PadLeft(3, '0'))"#, "007"),
        (
            r#"@(string.Format("{0}-{1:D3}-{2:F1}", "x", 7, 2.25))"#,
            "x-007-2.3",
        ),
        (r#"@($"{1234.5:N1}|{0.5:P0}|{255:X2}")"#, "1,234.5|50 %|FF"),
        (r#"@(string.IsNullOrWhiteSpace("  "))"#, "True"),
        (
            r#"@("Hello World".ToLowerInvariant().Replace("world", "there").IndexOf("there"))"#,
            "6",
        ),
        // dates and spans
        (
            r#"@(new DateTime(2026, 1, 31).AddMonths(1).ToString("yyyy-MM-dd"))"#,
            "2026-02-28",
        ),
        (
            r#"@(DateTime.ParseExact("20261207", "yyyyMMdd", null).DayOfWeek.ToString())"#,
            "Monday",
        ),
        (
            r#"@((new DateTime(2026, 1, 2) - new DateTime(2026, 1, 1)).TotalHours)"#,
            "24",
        ),
        (r#"@(TimeSpan.FromMinutes(90).ToString())"#, "01:30:00"),
        (
            r#"@(DateTime.Parse("2026-12-07T10:00:00Z").AddHours(2).ToString("o"))"#,
            "2026-12-07T12:00:00.0000000Z",
        ),
        (
            r#"@(DateTimeOffset.FromUnixTimeSeconds(0).ToString("yyyy"))"#,
            "1970",
        ),
        // encoding, hashing, regex, uri
        (
            r#"@(Convert.ToBase64String(Encoding.UTF8.GetBytes("hi")))"#,
            "aGk=",
        ),
        (
            r#"@(BitConverter.ToString(new HMACSHA256(Encoding.UTF8.GetBytes("key")).ComputeHash(Encoding.UTF8.GetBytes("The quick brown fox jumps over the lazy dog"))).Replace("-", "").ToLower())"#,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8",
        ),
        (
            r#"@(BitConverter.ToString(SHA256.Create().ComputeHash(Encoding.UTF8.GetBytes("abc"))).Substring(0, 8))"#,
            "BA-78-16",
        ),
        (
            r#"@(Convert.ToBase64String(MD5.Create().ComputeHash(Encoding.ASCII.GetBytes(""))))"#,
            "1B2M2Y8AsgTpgAmY7PhCfg==",
        ),
        (r##"@(Regex.Replace("a1b22", @"\d+", "#"))"##, "a#b#"),
        (
            r#"@(Regex.Match("order-42-x", @"order-(?<id>\d+)").Groups["id"].Value)"#,
            "42",
        ),
        (
            r#"@(Regex.IsMatch("ABC", "^abc$", RegexOptions.IgnoreCase))"#,
            "True",
        ),
        (r#"@(Regex.Matches("a1b2c3", @"\d").Count)"#, "3"),
        (
            r#"@(new Uri("https://example.com:8443/a/b?x=1").PathAndQuery)"#,
            "/a/b?x=1",
        ),
        (r#"@(Uri.EscapeDataString("a b/c"))"#, "a%20b%2Fc"),
        (r#"@(WebUtility.UrlEncode("a b&c"))"#, "a+b%26c"),
        (
            r#"@(Math.Round(2.5) + Math.Max(3, 7) + Math.Abs(-1))"#,
            "10",
        ),
        (r#"@(new Random(42).Next(1, 3) >= 1)"#, "True"),
        (r#"@(Guid.NewGuid().ToString().Length)"#, "36"),
        (r#"@(new byte[16].Length)"#, "16"),
        // XML
        (
            r#"@(XElement.Parse("<a><b id=\"1\">x</b><b id=\"2\">y</b></a>").Elements("b").Last().Attribute("id").Value)"#,
            "2",
        ),
        (
            r#"@{ var doc = XDocument.Parse("<r><v>1</v></r>"); doc.Root.Element("v").SetValue("2"); doc.Root.Add(new XElement("w", "3")); return doc.Root.ToString(); }"#,
            "<r>\n  <v>2</v>\n  <w>3</w>\n</r>",
        ),
        (
            r#"@{ XNamespace ns = "urn:x"; var e = XElement.Parse("<p:a xmlns:p=\"urn:x\"><p:b>v</p:b></p:a>"); return e.Element(ns + "b").Value; }"#,
            "v",
        ),
        (
            r#"@(XDocument.Parse("<a><b><c>1</c></b><c>2</c></a>").Descendants("c").Count())"#,
            "2",
        ),
        // context members reached further
        (r#"@(context.Request.Method.Length)"#, "3"),
        (
            r#"@(context.Request.Headers.GetValueOrDefault("X-Tier", "").ToUpper())"#,
            "GOLD",
        ),
    ];
    let mut failed = Vec::new();
    for (src, want) in cases {
        let got = text(src);
        if got != *want {
            failed.push(format!("{src}\n    want {want}\n    got  {got}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}

#[test]
fn evaluation_is_bounded() {
    for (src, says) in [
        ("@{ while (true) { } }", "ran too long"),
        (
            "@{ int F(int n) { return F(n + 1); } return F(0); }",
            "deep",
        ),
        (
            "@{ var s = \"x\"; for (int i = 0; i < 40; i++) { s = s + s; } return s; }",
            "larger than",
        ),
        ("@(new byte[1000000000])", "larger than"),
        ("@(\"x\".PadLeft(1000000000))", "larger than"),
        ("@(Enumerable.Range(0, 1000000000).Count())", "larger than"),
        (
            "@{ try { while (true) { } } catch (Exception e) { return 1; } }",
            "ran too long",
        ),
    ] {
        let e = run(src).unwrap_err();
        assert!(e.contains(says), "{src}: {e}");
    }
}

/// `context.Subscription.Id` is read in one step, yet a request without a subscription makes
/// it a null reference as in APIM (and `?.` still reads as null).
#[test]
fn members_past_an_absent_subscription_are_a_null_reference() {
    let ex = crate::exchange::Exchange::default();
    let code = parse("@(context.Subscription.Id)").unwrap();
    let e = eval_code(&code, &ex).unwrap_err();
    assert!(e.to_string().contains("reading Id of null"), "{e}");
    let code = parse("@(context.Subscription?.Id ?? \"none\")").unwrap();
    assert_eq!(eval_code(&code, &ex).unwrap().text(), "none");
    let mut ex = crate::exchange::Exchange::default();
    ex.info.insert("Subscription.Id", V::Str("s1".into()));
    let code = parse("@(context.Subscription.Id)").unwrap();
    assert_eq!(eval_code(&code, &ex).unwrap().text(), "s1");
}

/// A chain of assignments nests to the right: past the limit it is refused, not a stack
/// overflow (found by the `nesting` fuzz target).
#[test]
fn long_assignment_chains_are_refused_at_the_nesting_limit() {
    let chain = "Math.Abs??=".repeat(11_024);
    let e = parse(&format!("@({chain})")).unwrap_err().to_string();
    assert!(e.contains("nests more than"), "{e}");
    let short = "{ int a = 0; int b = 0; a = b = 3; return a + b; }";
    assert_eq!(run(&format!("@{short}")).unwrap().text(), "6");
}
