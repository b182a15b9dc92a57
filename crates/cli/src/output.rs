//! What the CLI prints: JSON, tables, and errors as one line (or JSON with `--json`).

use anyhow::{Context, Result, anyhow};
use comfy_table::{ContentArrangement, Table, presets::UTF8_BORDERS_ONLY};
use gatehouse_client::{self as client, Client};
use serde_json::{Value, json};

/// An error on standard error: one line (`error: CODE: message`), or with `--json` one JSON
/// object `{"error": {"code", "message", "status"}}` (the status when the API answered).
pub(crate) fn report_error(e: &anyhow::Error, json_out: bool) {
    let api = e.downcast_ref::<client::ApiFailure>();
    let message = match api {
        Some(f) => format!("{}{}", f.message, f.details),
        None => format!("{e:#}"),
    };
    if json_out {
        let body = json!({"error": {
            "code": api.map_or("Error", |f| f.code.as_str()),
            "message": message,
            "status": api.map(|f| f.status),
        }});
        eprintln!("{body}");
    } else {
        match api {
            Some(f) => eprintln!("error: {}: {message}", f.code),
            None => eprintln!("error: {message}"),
        }
    }
}

pub(crate) fn read_body(arg: Option<&str>) -> Result<Value> {
    let text = match arg {
        None => return Ok(json!({})),
        Some("-") => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read standard input")?;
            s
        }
        Some(file) => {
            std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
        }
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("the body is not valid JSON: {e}"))
}

pub(crate) fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints resources as a table with the given property columns.
pub(crate) fn print_table(items: &[Value], columns: &[(&str, &str)]) {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic);
    let mut header = vec!["ID"];
    header.extend(columns.iter().map(|(h, _)| *h));
    t.set_header(header);
    for item in items {
        let mut row = vec![
            item.get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        ];
        for (_, field) in columns {
            let v = item
                .get("properties")
                .and_then(|p| p.get(*field))
                .cloned()
                .unwrap_or(Value::Null);
            row.push(match v {
                Value::Null => String::new(),
                Value::String(s) => s,
                Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        x.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| x.to_string())
                    })
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            });
        }
        t.add_row(row);
    }
    println!("{t}");
    println!("{} item(s)", items.len());
}

pub(crate) async fn show_list(
    client: &Client,
    path: &str,
    json_out: bool,
    columns: &[(&str, &str)],
) -> Result<()> {
    let items = client.list_all(path).await?;
    if json_out {
        print_json(&Value::Array(items));
    } else {
        print_table(&items, columns);
    }
    Ok(())
}

/// A restore's dry run: per kind, how many resources it would add, change and remove.
pub(crate) fn print_plan(plan: &gatehouse_backup::RestorePlan) {
    if plan.changes.is_empty() {
        println!("dry run: the archive matches the instance; nothing would change");
    }
    for (kind, d) in &plan.changes {
        println!(
            "{kind:<16} +{} added  ~{} changed  -{} removed",
            d.added.len(),
            d.changed.len(),
            d.removed.len()
        );
    }
}
