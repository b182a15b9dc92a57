//! No input makes the parsers or the evaluator overflow a stack: long chains of one operator
//! are flat and evaluate, anything nested deeper than the documented limits is refused with
//! its position, and all of it runs on a thread with a small stack (256 KiB, an eighth of a
//! gateway worker's) so that a recursion proportional to the input would fail here first.

use gatehouse_policy::expr::{self, Env, MAX_NESTING, V, eval_code};
use gatehouse_policy::{NoResolver, Resolver, Section, parse_document};
use proptest::prelude::*;

const SMALL_STACK: usize = 256 * 1024;

/// Runs `f` on a thread with a small stack; a stack overflow aborts the test process.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(SMALL_STACK)
        .spawn(f)
        .expect("thread starts")
        .join()
        .expect("no panic")
}

struct Ip;

impl Env for Ip {
    fn member(&self, path: &str) -> Result<V, expr::EvalError> {
        Ok(match path {
            "Request.IpAddress" => V::Str("10.0.19.99".into()),
            p => V::Ctx(p.into()),
        })
    }
    fn lookup(&self, _: &str, _: &str) -> Option<V> {
        None
    }
    fn body(&self, _: &str) -> Result<String, expr::EvalError> {
        Ok(String::new())
    }
}

fn run(src: String) -> Result<V, String> {
    on_small_stack(move || {
        let code = expr::parse(&src).map_err(|e| e.to_string())?;
        eval_code(&code, &Ip).map_err(|e| e.to_string())
    })
}

fn chain(term: impl Fn(usize) -> String, op: &str, n: usize) -> String {
    (0..n).map(term).collect::<Vec<_>>().join(op)
}

#[test]
fn long_chains_of_one_operator_parse_and_evaluate() {
    let sum = format!("@({})", chain(|_| "1".into(), "+", 5_000));
    assert_eq!(run(sum), Ok(V::Int(5_000)));

    // An IP allow-list written as a long `||` chain: the last term matches.
    let allow = format!(
        "@({})",
        chain(
            |i| format!(
                "context.Request.IpAddress == \"10.0.{}.{}\"",
                i / 100,
                i % 100
            ),
            " || ",
            2_000
        )
    );
    assert_eq!(run(allow), Ok(V::Bool(true)));

    let all = format!("@({})", chain(|_| "true".into(), " && ", 5_000));
    assert_eq!(run(all), Ok(V::Bool(true)));

    let concat = format!("@({})", chain(|_| "\"ab\"".into(), " + ", 5_000));
    assert_eq!(run(concat), Ok(V::Str("ab".repeat(5_000))));

    let coalesce = format!("@({} ?? \"last\")", chain(|_| "null".into(), " ?? ", 5_000));
    assert_eq!(run(coalesce), Ok(V::Str("last".into())));

    // Mixed precedence stays in order: 2 + 3 * 4 - 6 / 2 = 11, a thousand times.
    let mixed = format!(
        "@({})",
        chain(|_| "(2 + 3 * 4 - 6 / 2)".into(), " + ", 1_000)
    );
    assert_eq!(run(mixed), Ok(V::Int(11_000)));
}

#[test]
fn short_circuits_hold_in_a_flat_chain() {
    // The division by zero is never evaluated.
    assert_eq!(
        run("@(false && 1 / 0 == 1 && true)".into()),
        Ok(V::Bool(false))
    );
    assert_eq!(
        run("@(true || 1 / 0 == 1 || false)".into()),
        Ok(V::Bool(true))
    );
    assert_eq!(
        run("@(\"x\" ?? (1 / 0).ToString())".into()),
        Ok(V::Str("x".into()))
    );
    assert_eq!(
        run("@(1 + 2 == 3 && 4 > 3 || false)".into()),
        Ok(V::Bool(true))
    );
}

fn nested(open: &str, inner: &str, close: &str, n: usize) -> String {
    format!("{}{inner}{}", open.repeat(n), close.repeat(n))
}

/// Deeply nested forms of every construct that recurses.
fn deep_inputs(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("parentheses", format!("@({})", nested("(", "1", ")", n))),
        ("negations", format!("@({}true)", "!".repeat(n))),
        ("minus signs", format!("@({}1)", "- ".repeat(n))),
        ("casts", format!("@({}1)", "(int)".repeat(n))),
        (
            "ternaries",
            format!("@({}1{})", "true ? ".repeat(n), " : 0".repeat(n)),
        ),
        (
            "ternaries in the condition",
            format!("@({}true{})", "(".repeat(n), " ? true : false)".repeat(n)),
        ),
        ("member calls", format!("@(\"a\"{})", ".Trim()".repeat(n))),
        (
            "member accesses",
            format!("@(\"a\"{})", ".Length.ToString()".repeat(n)),
        ),
        (
            "indexes",
            format!("@(\"abc\"{})", "[0].ToString()".repeat(n)),
        ),
        (
            "call arguments",
            format!("@({})", nested("Math.Abs(", "1", ")", n)),
        ),
        (
            "interpolations",
            format!("@({})", nested("$\"{", "1", "}\"", n.min(2_000))),
        ),
        (
            "if blocks",
            format!(
                "@{{{}return 1;{} return 0;}}",
                "if (true) {".repeat(n),
                "}".repeat(n)
            ),
        ),
        (
            "if statements without braces",
            format!("@{{{}return 1; return 0;}}", "if (true) ".repeat(n)),
        ),
        (
            "foreach blocks",
            format!(
                "@{{{}var z = 1;{} return 0;}}",
                "foreach (var c in \"ab\") {".repeat(n),
                "}".repeat(n)
            ),
        ),
        (
            "precedence ladders",
            format!("@({})", nested("(1 * (1 + (1 == (", "1", "))))", n)),
        ),
    ]
}

#[test]
fn deep_nesting_is_refused_with_its_position_never_overflowing() {
    for (what, src) in deep_inputs(10_000) {
        let result = on_small_stack(move || expr::parse(&src).map(|_| ()));
        let err = result.expect_err(what);
        assert!(
            err.message
                .contains(&format!("more than {MAX_NESTING} levels")),
            "{what}: {err}"
        );
        assert!(err.offset > 0, "{what}: a position is given: {err}");
    }
}

#[test]
fn nesting_up_to_the_limit_is_accepted_and_runs() {
    // Each level of these takes one nesting level; the limit itself is accepted.
    let depth = MAX_NESTING - 2;
    for (what, src) in [
        (
            "parentheses",
            format!("@({})", nested("(", "1", ")", depth)),
        ),
        ("negations", format!("@({}true)", "!".repeat(depth))),
        (
            "member calls",
            format!("@(\"a\"{})", ".Trim()".repeat(depth)),
        ),
        (
            "if blocks",
            format!(
                "@{{{}return 1;{} return 0;}}",
                "if (true) {".repeat(depth / 2),
                "}".repeat(depth / 2)
            ),
        ),
    ] {
        let r = run(src);
        assert!(r.is_ok(), "{what}: {r:?}");
    }
}

fn policy_with(inbound: &str) -> String {
    format!(
        "<policies><inbound>{inbound}</inbound><backend><forward-request/></backend><outbound/><on-error/></policies>"
    )
}

fn nested_choose(n: usize) -> String {
    nested(
        "<choose><when condition=\"@(true)\">",
        "<set-header name=\"x\"><value>1</value></set-header>",
        "</when></choose>",
        n,
    )
}

#[test]
fn deeply_nested_policies_are_refused_with_line_and_column() {
    for n in [40, 1_000, 100_000] {
        let doc = policy_with(&nested_choose(n));
        let err = on_small_stack(move || parse_document(&doc, "xml", &NoResolver).map(|_| ()))
            .expect_err("too deep");
        assert!(
            err.message.contains("more than 32 levels deep"),
            "{n}: {err}"
        );
        assert_eq!(err.pos.line, 1);
        assert!(err.pos.column > 1, "{err}");
    }
    // Within the limit, it compiles.
    let doc = policy_with(&nested_choose(15));
    on_small_stack(move || parse_document(&doc, "xml", &NoResolver).map(|_| ())).expect("fits");
}

struct Fragments(Vec<(&'static str, String)>);

impl Resolver for Fragments {
    fn named_value(&self, _: &str) -> Option<String> {
        None
    }
    fn fragment(&self, id: &str) -> Option<(String, String)> {
        self.0
            .iter()
            .find(|(name, _)| *name == id)
            .map(|(_, xml)| (xml.clone(), "xml".to_string()))
    }
}

#[test]
fn fragments_count_toward_the_limits() {
    // A fragment whose own policies nest 10,000 levels deep.
    let deep = Fragments(vec![(
        "deep",
        format!("<fragment>{}</fragment>", nested_choose(10_000)),
    )]);
    let doc = policy_with("<include-fragment fragment-id=\"deep\"/>");
    let err = on_small_stack(move || parse_document(&doc, "xml", &deep).map(|_| ()))
        .expect_err("too deep");
    assert!(err.message.contains("in the fragment 'deep'"), "{err}");
    assert!(err.message.contains("more than 32 levels deep"), "{err}");

    // Nesting around the include counts too: 20 levels outside, 20 inside.
    let inner = Fragments(vec![(
        "twenty",
        format!("<fragment>{}</fragment>", nested_choose(20)),
    )]);
    let doc = policy_with(&nested(
        "<choose><when condition=\"@(true)\">",
        "<include-fragment fragment-id=\"twenty\"/>",
        "</when></choose>",
        20,
    ));
    let err = on_small_stack(move || parse_document(&doc, "xml", &inner).map(|_| ()))
        .expect_err("too deep");
    assert!(err.message.contains("more than 32 levels deep"), "{err}");

    // Fragments that include each other ten times over, seven levels down: 10^7 policies.
    let mut fans = Vec::new();
    let names = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"];
    for level in 0..7 {
        let body = format!("<include-fragment fragment-id=\"{}\"/>", names[level + 1]).repeat(10);
        fans.push((names[level], format!("<fragment>{body}</fragment>")));
    }
    fans.push((
        "f7",
        "<fragment><set-header name=\"x\"><value>1</value></set-header></fragment>".to_string(),
    ));
    let doc = policy_with("<include-fragment fragment-id=\"f0\"/>");
    let started = std::time::Instant::now();
    let err = on_small_stack(move || parse_document(&doc, "xml", &Fragments(fans)).map(|_| ()))
        .expect_err("too many");
    assert!(err.message.contains("more than 10000 policies"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[test]
fn sections_with_many_policies_side_by_side_compile() {
    // Breadth is not depth: 5,000 set-headers in one section are fine.
    let many = "<set-header name=\"x\" exists-action=\"append\"><value>1</value></set-header>"
        .repeat(5_000);
    let doc = policy_with(&many);
    let parsed = on_small_stack(move || {
        parse_document(&doc, "xml", &NoResolver)
            .map(|d| d.section(Section::Inbound).map_or(0, |s| s.len()))
    });
    assert_eq!(parsed, Ok(5_000));
}

fn arbitrary_nesting() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        ("(", ")"),
        ("!(", ")"),
        ("(int)(", ")"),
        ("Math.Abs(", ")"),
        ("(true ? ", " : 0)"),
        ("$\"{", "}\""),
        ("(1 + ", " * 2)"),
        ("(\"a\" ?? ", ")"),
    ]);
    prop::collection::vec(piece, 0..300).prop_map(|pieces| {
        let mut s = String::from("1");
        for (open, close) in pieces {
            s = format!("{open}{s}{close}");
        }
        format!("@({s})")
    })
}

fn arbitrary_chain() -> impl Strategy<Value = String> {
    let op = prop::sample::select(vec![
        " + ", " - ", " * ", " == ", " != ", " < ", " && ", " || ", " ?? ",
    ]);
    prop::collection::vec((op, 0i64..100), 0..3_000).prop_map(|terms| {
        let mut s = String::from("1");
        for (op, n) in terms {
            s.push_str(op);
            s.push_str(&n.to_string());
        }
        format!("@({s})")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any nesting parses or is refused for its depth; what parses evaluates to a value or an
    /// evaluation error — on a small stack, so nothing recursed in proportion to the input.
    #[test]
    fn nesting_never_overflows(src in arbitrary_nesting()) {
        let outcome = on_small_stack(move || match expr::parse(&src) {
            Ok(code) => { let _ = eval_code(&code, &Ip); Ok(()) }
            Err(e) => Err(e.message),
        });
        if let Err(message) = outcome {
            prop_assert!(message.contains("levels deep") || message.contains("interpolated"), "{}", message);
        }
    }

    /// Chains of any operators and any length parse (or fail for a reason other than depth)
    /// and evaluate without recursing in proportion to their length.
    #[test]
    fn long_chains_never_overflow(src in arbitrary_chain()) {
        let outcome = on_small_stack(move || expr::parse(&src).map(|code| { let _ = eval_code(&code, &Ip); }));
        if let Err(e) = outcome {
            prop_assert!(!e.message.contains("levels deep"), "{}", e);
        }
    }
}
