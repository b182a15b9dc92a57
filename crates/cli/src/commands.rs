//! Running a command: `serve`, and the client commands against a running instance.

use crate::args::*;
use crate::config::{data_dir_of, env_value, serve_config};
use crate::output::{print_json, read_body};
use crate::resources::{self, *};
use crate::{moving, offline};
use anyhow::{Context, Result, anyhow};
use comfy_table::{Table, presets::UTF8_BORDERS_ONLY};
use gatehouse_client::{Client, path_segment as seg};
use gatehouse_server::Instance;
use serde_json::{Value, json};

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to standard error, at `GATEHOUSE_LOG` (default `info`).
fn start_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GATEHOUSE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn serve(target: &Target, args: &ServeArgs) -> Result<()> {
    start_logging();
    let config = serve_config(target, args)?;
    let instance = Instance::start(config).await?;
    println!("management API: {}", instance.management_url);
    println!("gateway:        {}", instance.gateway_url);
    println!(
        "admin token:    {}",
        instance
            .data_dir
            .join(gatehouse_model::files::ADMIN_TOKEN)
            .display()
    );
    tokio::select! {
        _ = shutdown_signal() => tracing::info!("shutting down: finishing requests in flight"),
        _ = instance.deleted() => tracing::info!("the service was deleted: finishing requests in flight"),
    }
    instance.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn gateway(target: &Target, args: &crate::args::GatewayArgs) -> Result<()> {
    start_logging();
    let config = crate::config::regional_config(target, args)?;
    let node = gatehouse_regional::RegionalGateway::start(config).await?;
    println!("gateway:        {}", node.gateway_url);
    if let Some(url) = &node.metrics_url {
        println!("metrics:        {url}");
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing requests in flight");
    node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

pub(crate) async fn execute(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve(args) => return serve(&cli.target, args).await,
        Command::Gateway(args) => return gateway(&cli.target, args).await,
        Command::Backup(args) => return offline::backup(&cli.target, args, cli.json).await,
        Command::Restore(args) => return offline::restore(&cli.target, args, cli.json).await,
        Command::Drill(args) => {
            // With --url (and --token), the drill compares with that live instance.
            let live = match &cli.target.url {
                Some(url) => Some(Client::trusting(
                    url,
                    cli.target.token.as_deref().unwrap_or_default(),
                    cli.target.ca_file.as_deref(),
                )?),
                None => None,
            };
            return crate::archive::drill(args, live, cli.json).await;
        }
        Command::Move(args) => {
            return moving::run(args, cli.json, cli.target.ca_file.as_deref()).await;
        }
        _ => {}
    }
    let data_dir = data_dir_of(&cli.target, None);
    let client = Client::locate(
        cli.target.url.as_deref(),
        cli.target.token.as_deref(),
        &data_dir,
        cli.target.ca_file.as_deref(),
    )?;
    let j = cli.json;
    match cli.command {
        Command::Serve(_)
        | Command::Gateway(_)
        | Command::Backup(_)
        | Command::Restore(_)
        | Command::Drill(_)
        | Command::Move(_) => {
            unreachable!("handled above")
        }
        Command::Get { path } => print_json(&client.get(&path).await?),
        Command::Put { path, body } => {
            print_json(&client.put(&path, &read_body(body.as_deref())?).await?)
        }
        Command::Patch { path, body } => {
            let body = read_body(body.as_deref())?;
            let changed = client
                .send(reqwest::Method::PATCH, &path, Some(&body))
                .await?;
            print_json(&changed)
        }
        Command::Delete { path } => {
            if !client.delete(&path).await? {
                return Err(anyhow!("there is no {path}: nothing was deleted"));
            }
            println!("deleted {path}");
        }
        Command::Service { action } => service(&client, action, j).await?,
        Command::Api(cmd) => api(&client, cmd, j).await?,
        Command::Product(cmd) => product(&client, cmd, j).await?,
        Command::Subscription(cmd) => subscription(&client, cmd, j).await?,
        Command::User(cmd) => user(&client, cmd, j).await?,
        Command::Group(cmd) => resources::run(&client, &GROUP, cmd, j).await?,
        Command::NamedValue(cmd) => resources::run(&client, &NAMED_VALUE, cmd, j).await?,
        Command::Backend(cmd) => resources::run(&client, &BACKEND, cmd, j).await?,
        Command::Certificate(cmd) => resources::run(&client, &CERTIFICATE, cmd, j).await?,
        Command::Tag(cmd) => resources::run(&client, &TAG, cmd, j).await?,
        Command::Policy(cmd) => resources::policy(&client, cmd, j).await?,
        Command::Token(cmd) => token(&client, cmd, j).await?,
        Command::Journal { since } => journal(&client, since, j).await?,
        Command::Export(args) => crate::folder::export(&client, &args, j).await?,
        Command::Import(args) => crate::folder::import(&client, &args, j).await?,
    }
    Ok(())
}

async fn service(client: &Client, action: Option<ServiceCmd>, json: bool) -> Result<()> {
    let Some(ServiceCmd::Delete { yes }) = action else {
        let s = client.get("/").await?;
        if json {
            print_json(&s);
            return Ok(());
        }
        let p = &s["properties"];
        println!("name:       {}", s["name"].as_str().unwrap_or(""));
        println!("region:     {}", s["location"].as_str().unwrap_or(""));
        println!(
            "sku:        {} ({} unit(s))",
            s["sku"]["name"].as_str().unwrap_or(""),
            s["sku"]["capacity"]
        );
        println!("gateway:    {}", p["gatewayUrl"].as_str().unwrap_or(""));
        println!(
            "management: {}",
            p["managementApiUrl"].as_str().unwrap_or("")
        );
        println!("revision:   {}", p["revision"]);
        return Ok(());
    };
    let name = client.service().await?.name;
    if !yes {
        return Err(anyhow!(
            "deleting the service '{name}' stops it and marks its data deleted: run again with --yes to confirm"
        ));
    }
    let confirmed = format!("/?confirm={}", seg(&name));
    client
        .send(reqwest::Method::DELETE, &confirmed, None)
        .await?;
    println!("deleted the service '{name}'");
    Ok(())
}

async fn api(client: &Client, cmd: ApiCmd, j: bool) -> Result<()> {
    match cmd {
        ApiCmd::Common(cmd) => resources::common(client, &API, cmd, j).await,
        ApiCmd::Create { id, props } => resources::create(client, &API, &id, &props, j).await,
        ApiCmd::Export { id } => {
            let path = format!("/apis/{}?export=true&format=openapi%2Bjson", seg(&id));
            print_json(&client.get(&path).await?["value"]);
            Ok(())
        }
        ApiCmd::Import {
            id,
            openapi,
            path,
            service_url,
            protocols,
        } => {
            let doc = std::fs::read_to_string(&openapi)
                .with_context(|| format!("cannot read {openapi}"))?;
            let mut props = json!({"format": openapi_format(&doc), "value": doc, "path": path.unwrap_or_else(|| id.clone()), "protocols": protocols});
            if let Some(u) = service_url {
                props["serviceUrl"] = json!(u);
            }
            let api = client
                .put(&API.path_of(&id), &json!({"properties": props}))
                .await?;
            let ops = client
                .list_all(&format!("/apis/{}/operations", seg(&id)))
                .await?;
            if j {
                print_json(&api);
            } else {
                println!(
                    "imported API '{id}' ({}) at path '/{}' with {} operation(s)",
                    api["properties"]["displayName"].as_str().unwrap_or(""),
                    api["properties"]["path"].as_str().unwrap_or(""),
                    ops.len()
                );
            }
            Ok(())
        }
    }
}

/// The import format APIM names for a document: Swagger 2 or OpenAPI 3, JSON or YAML.
fn openapi_format(doc: &str) -> &'static str {
    if !doc.trim_start().starts_with('{') {
        "openapi"
    } else if doc.contains("\"swagger\"") {
        "swagger-json"
    } else {
        "openapi+json"
    }
}

async fn product(client: &Client, cmd: ProductCmd, j: bool) -> Result<()> {
    match cmd {
        ProductCmd::Common(cmd) => resources::common(client, &PRODUCT, cmd, j).await,
        ProductCmd::Create {
            id,
            display_name,
            open,
            publish,
        } => {
            let state = if publish { "published" } else { "notPublished" };
            let body = json!({"properties": {"displayName": display_name, "subscriptionRequired": !open, "state": state}});
            let p = client.put(&PRODUCT.path_of(&id), &body).await?;
            saved(&p, &format!("product '{id}' saved"), j);
            Ok(())
        }
        ProductCmd::AddApi { product, api } => {
            let link = format!("/products/{}/apis/{}", seg(&product), seg(&api));
            client.put(&link, &json!({})).await?;
            println!("API '{api}' added to product '{product}'");
            Ok(())
        }
    }
}

async fn subscription(client: &Client, cmd: SubscriptionCmd, j: bool) -> Result<()> {
    let kind = &SUBSCRIPTION;
    match cmd {
        SubscriptionCmd::Common(cmd) => resources::common(client, kind, cmd, j).await,
        SubscriptionCmd::Create {
            id,
            scope,
            display_name,
            owner,
            submitted,
        } => {
            let state = if submitted { "submitted" } else { "active" };
            let mut props = json!({"scope": scope, "displayName": display_name.unwrap_or_else(|| id.clone()), "state": state});
            if let Some(o) = owner {
                props["ownerId"] = json!(format!("/users/{}", seg(&o)));
            }
            let body = json!({"properties": props});
            let s = client.put(&kind.path_of(&id), &body).await?;
            let state = s["properties"]["state"].as_str().unwrap_or("");
            saved(&s, &format!("subscription '{id}' saved (state {state})"), j);
            Ok(())
        }
        SubscriptionCmd::Keys { id } => {
            let k = client
                .post(&format!("/subscriptions/{}/listSecrets", seg(&id)))
                .await?;
            if j {
                print_json(&k);
            } else {
                println!("primary:   {}", k["primaryKey"].as_str().unwrap_or(""));
                println!("secondary: {}", k["secondaryKey"].as_str().unwrap_or(""));
            }
            Ok(())
        }
    }
}

async fn user(client: &Client, cmd: UserCmd, j: bool) -> Result<()> {
    match cmd {
        UserCmd::Common(cmd) => resources::common(client, &USER, cmd, j).await,
        UserCmd::Create {
            id,
            email,
            first_name,
            last_name,
            password_env,
        } => {
            let mut props = json!({"email": email, "firstName": first_name, "lastName": last_name});
            if let Some(var) = password_env {
                let pw = env_value(&var)
                    .ok_or_else(|| anyhow!("the environment variable {var} is not set"))?;
                props["password"] = json!(pw);
            }
            let body = json!({"properties": props});
            let u = client.put(&USER.path_of(&id), &body).await?;
            saved(&u, &format!("user '{id}' saved"), j);
            Ok(())
        }
    }
}

fn saved(resource: &Value, summary: &str, json: bool) {
    if json {
        print_json(resource)
    } else {
        println!("{summary}")
    }
}

async fn journal(client: &Client, since: u64, json: bool) -> Result<()> {
    let items = client.list_all(&format!("/journal?since={since}")).await?;
    if json {
        print_json(&Value::Array(items));
        return Ok(());
    }
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY);
    t.set_header(vec!["REVISION", "TIME", "OPERATION", "RESOURCE"]);
    for e in &items {
        t.add_row(vec![
            e["revision"].to_string(),
            e["timestamp"].as_str().unwrap_or("").to_string(),
            e["operation"].as_str().unwrap_or("").to_string(),
            e["resourceId"].as_str().unwrap_or("").to_string(),
        ]);
    }
    println!("{t}");
    println!("{} entries", items.len());
    Ok(())
}

/// An expiry as an RFC 3339 time: given as one, or as a duration from now (`30d`, `12h`,
/// `90m`, `600s`).
fn expiry(text: &str) -> Result<String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t.format(&Rfc3339)?);
    }
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = number
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| anyhow!("--expires must be a duration such as 30d, 12h or 90m, or an RFC 3339 time; '{text}' is neither"))?;
    let span = match unit {
        "d" => time::Duration::days(n),
        "h" => time::Duration::hours(n),
        "m" => time::Duration::minutes(n),
        "s" => time::Duration::seconds(n),
        _ => anyhow::bail!("--expires must end in d, h, m or s (or be an RFC 3339 time): '{text}'"),
    };
    Ok((time::OffsetDateTime::now_utc() + span).format(&Rfc3339)?)
}

async fn token(client: &Client, cmd: TokenCmd, json_out: bool) -> Result<()> {
    match cmd {
        TokenCmd::Create {
            role,
            expires,
            description,
        } => {
            let mut body = json!({"role": role, "description": description});
            if let Some(e) = expires {
                body["expires"] = json!(expiry(&e)?);
            }
            let t = client
                .send(reqwest::Method::POST, "/tokens", Some(&body))
                .await?;
            if json_out {
                print_json(&t);
            } else {
                println!(
                    "token {} ({}, expires {}):",
                    t["id"].as_str().unwrap_or(""),
                    t["role"].as_str().unwrap_or(""),
                    t["expires"].as_str().unwrap_or("never")
                );
                println!("{}", t["value"].as_str().unwrap_or(""));
                eprintln!("the value is shown only now: keep it safe");
            }
        }
        TokenCmd::List => {
            let list = client.get("/tokens").await?;
            if json_out {
                print_json(&list);
                return Ok(());
            }
            let mut t = Table::new();
            t.load_preset(UTF8_BORDERS_ONLY);
            t.set_header(vec!["ID", "ROLE", "CREATED", "EXPIRES", "DESCRIPTION"]);
            for item in list["value"].as_array().into_iter().flatten() {
                let cell = |k: &str| item[k].as_str().unwrap_or("").to_string();
                t.add_row(vec![
                    cell("id"),
                    cell("role"),
                    cell("created"),
                    cell("expires"),
                    cell("description"),
                ]);
            }
            println!("{t}");
        }
        TokenCmd::Revoke { id } => {
            client.delete(&format!("/tokens/{}", seg(&id))).await?;
            println!("revoked token '{id}'");
        }
    }
    Ok(())
}
