//! The pages' templates, embedded in the binary and compiled once; every value they print is
//! HTML-escaped unless marked `|safe` (only HTML that `markdown` made safe is).

use crate::error::PortalError;
use minijinja::Environment;
use serde_json::Value;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("page.html", include_str!("../templates/page.html")),
    ("apis.html", include_str!("../templates/apis.html")),
    ("api.html", include_str!("../templates/api.html")),
    (
        "operation.html",
        include_str!("../templates/operation.html"),
    ),
    (
        "tryit_result.html",
        include_str!("../templates/tryit_result.html"),
    ),
    ("products.html", include_str!("../templates/products.html")),
    ("product.html", include_str!("../templates/product.html")),
    ("signin.html", include_str!("../templates/signin.html")),
    ("signup.html", include_str!("../templates/signup.html")),
    ("profile.html", include_str!("../templates/profile.html")),
    (
        "subscriptions.html",
        include_str!("../templates/subscriptions.html"),
    ),
    (
        "subscription.html",
        include_str!("../templates/subscription.html"),
    ),
    ("admin.html", include_str!("../templates/admin.html")),
    (
        "admin_page.html",
        include_str!("../templates/admin_page.html"),
    ),
    ("message.html", include_str!("../templates/message.html")),
    ("reset.html", include_str!("../templates/reset.html")),
    (
        "new_password.html",
        include_str!("../templates/new_password.html"),
    ),
];

pub struct Templates(Environment<'static>);

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Lenient);
        env.add_filter("truncate", truncate);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)
                .unwrap_or_else(|e| panic!("the embedded template {name} does not parse: {e}"));
        }
        Templates(env)
    }

    pub fn render(&self, name: &str, ctx: &Value) -> Result<String, PortalError> {
        self.0
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(PortalError::internal)
    }
}

/// At most `n` characters, with an ellipsis when cut.
fn truncate(text: String, n: usize) -> String {
    if text.chars().count() <= n {
        return text;
    }
    let mut out: String = text.chars().take(n).collect();
    out.push('…');
    out
}

impl Default for Templates {
    fn default() -> Self {
        Templates::new()
    }
}
