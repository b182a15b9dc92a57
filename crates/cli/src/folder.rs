//! `gatehouse export` and `gatehouse import`: the configuration as a folder in APIOps's
//! layout, moved over the management API (`GET /export`, `POST /import`) as an archive.
//!
//! The override file's `{#TOKEN#}` placeholders are replaced here, from this process's
//! environment, so that secrets come from where the pipeline runs.

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use gatehouse_apiops::{archive, dir, filter, overrides};
use gatehouse_client::Client;
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// The folder to write (created if missing; must be empty unless --clean).
    #[arg(long, required_unless_present = "out")]
    pub dir: Option<PathBuf>,
    /// `apiops` (a folder, the default) or `arm` (an ARM deployment template, to --out).
    #[arg(long, default_value = "apiops", value_parser = ["apiops", "arm"])]
    pub format: String,
    /// The template file to write (with --format arm).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Export only these resources and what is below them, e.g. /apis/echo,/products/starter.
    #[arg(long, value_delimiter = ',')]
    pub include: Vec<String>,
    /// An APIOps extractor filter file (configuration.extractor.yaml): only the resources it
    /// names, by type (a type it does not name: all of them).
    #[arg(long)]
    pub filter: Option<PathBuf>,
    /// Remove what an earlier export wrote (the root policy.xml and the collection folders)
    /// before writing; other files in the folder stay.
    #[arg(long)]
    pub clean: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The folder to read (APIOps's layout, as `gatehouse export` or APIOps's extractor
    /// writes it).
    #[arg(long, required_unless_present = "arm", conflicts_with = "arm")]
    pub dir: Option<PathBuf>,
    /// An ARM deployment template to read instead (as `gatehouse export --format arm` or
    /// Azure's "Export template" writes it).
    #[arg(long)]
    pub arm: Option<PathBuf>,
    /// The template's parameters file ({"parameters": {name: {"value": …}}}), with --arm.
    #[arg(long, requires = "arm")]
    pub parameters: Option<PathBuf>,
    /// An APIOps publisher override file (configuration.<env>.yaml); its {#TOKEN#}
    /// placeholders are replaced from the environment variables they name.
    #[arg(long, conflicts_with = "arm")]
    pub overrides: Option<PathBuf>,
    /// Show what would change, and change nothing.
    #[arg(long)]
    pub plan: bool,
    /// Also delete what the folder's collections lack (listed first, asked before).
    #[arg(long)]
    pub prune: bool,
    /// Apply a prune without asking.
    #[arg(long)]
    pub yes: bool,
}

pub async fn export(client: &Client, args: &ExportArgs, json: bool) -> Result<()> {
    let include = if args.include.is_empty() {
        String::new()
    } else {
        format!("&include={}", encode(&args.include.join(",")))
    };
    if args.format == "arm" {
        let out = args
            .out
            .as_ref()
            .ok_or_else(|| anyhow!("--format arm writes a template: pass --out FILE"))?;
        let template = client.get(&format!("/export?format=arm{include}")).await?;
        let text = serde_json::to_string_pretty(&template)? + "\n";
        std::fs::write(out, text).with_context(|| format!("cannot write {}", out.display()))?;
        let n = template["resources"].as_array().map_or(0, Vec::len);
        if json {
            crate::output::print_json(&serde_json::json!({"out": out, "resources": n}));
        } else {
            println!("exported {n} resources to {}", out.display());
        }
        return Ok(());
    }
    let dir = args
        .dir
        .as_ref()
        .ok_or_else(|| anyhow!("pass --dir DIR (or --format arm --out FILE)"))?;
    let filter = match &args.filter {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the filter file {}", path.display()))?;
            Some(filter::Filter::parse(&path.display().to_string(), &text)?)
        }
    };
    prepare_export_dir(dir, args.clean)?;
    let zip = client
        .download(&format!("/export?format=apiops{include}"))
        .await?;
    let mut files =
        archive::read(&zip, archive::LIMITS).context("the export is not a readable zip")?;
    if let Some(f) = filter {
        files = f.apply(files);
    }
    dir::write_dir(dir, &files)?;
    if json {
        crate::output::print_json(&serde_json::json!({"dir": dir, "files": files.len()}));
    } else {
        println!("exported {} files to {}", files.len(), dir.display());
    }
    Ok(())
}

fn prepare_export_dir(target: &Path, clean: bool) -> Result<()> {
    if clean {
        for p in dir::exported_names(target)? {
            if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            }
            .with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    let not_empty = std::fs::read_dir(target)
        .map(|mut d| d.any(|e| e.is_ok_and(|e| e.file_name() != ".git")))
        .unwrap_or(false);
    if not_empty && !clean {
        bail!(
            "{} is not empty: pass --clean to replace what an earlier export wrote, or choose an empty folder",
            target.display()
        );
    }
    std::fs::create_dir_all(target).with_context(|| format!("cannot create {}", target.display()))
}

pub async fn import(client: &Client, args: &ImportArgs, json: bool) -> Result<()> {
    let mut query = Vec::new();
    let (body, content_type) = match (&args.arm, &args.dir) {
        (Some(template), _) => {
            query.push("format=arm".to_string());
            (
                template_body(template, args.parameters.as_deref())?,
                "application/json",
            )
        }
        (None, Some(folder)) => {
            query.push("format=apiops".to_string());
            (
                folder_body(folder, args.overrides.as_deref(), &mut query)?,
                "application/gzip",
            )
        }
        (None, None) => bail!("pass --dir DIR or --arm TEMPLATE"),
    };
    if args.prune {
        query.push("prune=true".into());
    }
    let send = |plan: bool| {
        let mut q = query.clone();
        if plan {
            q.push("plan=true".into());
        }
        let url = format!("/import?{}", q.join("&"));
        let body = body.clone();
        async move { client.upload(&url, body, content_type).await }
    };
    if args.plan {
        return show(&send(true).await?, json);
    }
    if args.prune && !args.yes {
        let plan = send(true).await?;
        let deleted = plan["deleted"].as_array().map_or(0, Vec::len);
        if deleted > 0 && !confirm(&plan, deleted)? {
            bail!("nothing was changed");
        }
    }
    show(&send(false).await?, json)
}

/// The folder as a gzip'd tar, with the override file (placeholders replaced) beside it.
fn folder_body(
    folder: &Path,
    overrides: Option<&Path>,
    query: &mut Vec<String>,
) -> Result<Vec<u8>> {
    if !folder.is_dir() {
        bail!("{} is not a folder", folder.display());
    }
    let mut files = dir::read_dir(folder)?;
    if let Some(path) = overrides {
        let (name, text) = read_overrides(path)?;
        files.insert(name.clone(), text.into_bytes());
        query.push(format!("overrides={}", encode(&name)));
    }
    Ok(archive::tar_gz(&files))
}

fn template_body(template: &Path, parameters: Option<&Path>) -> Result<Vec<u8>> {
    let read = |p: &Path| -> Result<Value> {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", p.display()))
    };
    let mut body = serde_json::json!({"template": read(template)?});
    if let Some(p) = parameters {
        body["parameters"] = read(p)?;
    }
    Ok(serde_json::to_vec(&body)?)
}

fn read_overrides(path: &Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the override file {}", path.display()))?;
    let text = overrides::substitute_tokens(&text, crate::env::env_value)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("overrides.yaml")
        .to_string();
    Ok((name, text))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Lists the deletions and asks; without a terminal to ask on, refuses.
fn confirm(plan: &Value, deleted: usize) -> Result<bool> {
    for d in plan["deleted"].as_array().into_iter().flatten() {
        eprintln!("- {}", d["id"].as_str().unwrap_or(""));
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "the import would delete {deleted} resources (listed above): run it with --yes to confirm, or without --prune"
        );
    }
    eprint!("Delete these {deleted} resources? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

fn show(plan: &Value, json: bool) -> Result<()> {
    if json {
        crate::output::print_json(plan);
        return Ok(());
    }
    let list = |key: &str| plan[key].as_array().cloned().unwrap_or_default();
    for c in list("created") {
        println!("+ {}  ({})", text(&c["id"]), text(&c["file"]));
    }
    for c in list("updated") {
        let props: Vec<&str> = c["properties"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("~ {}  {}", text(&c["id"]), props.join(", "));
    }
    for c in list("deleted") {
        println!("- {}  ({})", text(&c["id"]), text(&c["reason"]));
    }
    for s in list("skipped") {
        println!("! {}: {}", text(&s["file"]), text(&s["reason"]));
    }
    println!("{}", text(&plan["summary"]));
    Ok(())
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}
