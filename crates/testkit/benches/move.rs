//! Move benchmark: `gatehouse move` of an instance of about 120,000 entities between two
//! instances on this machine (westeurope → eastus), with the RFC 2136 cutover against Knot DNS
//! (TTL 1 s), printing each step's time beside its anchors: the physical floor (copying the
//! source's database file) and APIM's published restore time (30–45 minutes for the restore
//! alone).
//!
//! Run: `cargo bench -p gatehouse-testkit --bench move` (`-- --quick` for a tenth of it).
//! Needs Knot DNS: `bash scripts/test-deps.sh` installs it.

use gatehouse_mover::options::{DnsMode, MoveOptions, Side};
use gatehouse_testkit::dns::Knot;
use gatehouse_testkit::{Instance, ServeConfig};
use std::time::Instant;

#[path = "common/large.rs"]
mod large;

fn patch_hostname(url: &str, token: &str, host: &str) {
    let out = std::process::Command::new("curl")
        .args(["-sf", "-X", "PATCH", "-H", &format!("Authorization: Bearer {token}"), "-H", "Content-Type: application/json"])
        .arg("--data")
        .arg(format!(r#"{{"properties":{{"hostnameConfigurations":[{{"type":"Proxy","hostName":"{host}"}}]}}}}"#))
        .arg(format!("{url}/"))
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "PATCH / failed");
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("westeurope");
    let t = Instant::now();
    large::populate(&src, scale);
    let populate_s = t.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(src.join("gatehouse.db")).unwrap().len();

    // The floor: the bytes of the source's database copied to another file.
    let t = Instant::now();
    std::fs::copy(src.join("gatehouse.db"), dir.path().join("floor.db")).unwrap();
    let floor_s = t.elapsed().as_secs_f64();

    let mut source_config = ServeConfig::ephemeral(&src);
    source_config.bootstrap.region = Some("westeurope".into());
    let source = Instance::start(source_config).await.unwrap();
    let dst = dir.path().join("eastus");
    let mut target_config = ServeConfig::ephemeral(&dst);
    target_config.bootstrap.name = Some("target".into());
    target_config.bootstrap.region = Some("eastus".into());
    target_config.bootstrap.sku = Some("Premium".into());
    let target = Instance::start(target_config).await.unwrap();
    patch_hostname(
        &source.management_url,
        &source.token,
        "gw-westeurope.contoso.test",
    );
    patch_hostname(
        &target.management_url,
        &target.token,
        "gw-eastus.contoso.test",
    );
    let knot = Knot::start(
        "contoso.test",
        "gw-westeurope 1 A 127.0.0.2\ngw-eastus 1 A 127.0.0.3\napi 1 CNAME gw-westeurope",
    )
    .await
    .expect("Knot DNS runs (bash scripts/test-deps.sh installs it)");

    let key_file = dir.path().join("archive.key");
    std::fs::write(&key_file, gatehouse_backup::BackupKey::generate()).unwrap();
    let state = dir.path().join("archives/gatehouse-move.json");
    std::fs::create_dir_all(dir.path().join("archives")).unwrap();
    let options = MoveOptions {
        source: Side::DataDir(src.clone()),
        target: Side::DataDir(dst.clone()),
        storage: dir.path().join("archives").display().to_string(),
        backup_name: "bench.ghbak".into(),
        key_file,
        from_archive: None,
        same_name: false,
        delete_source_first: false,
        keep_source: false,
        force: false,
        allow_tier_change: false,
        overlay: None,
        dns: DnsMode::Rfc2136 {
            server: knot.addr,
            zone: "contoso.test".into(),
            key_file: knot.key_file(),
        },
        custom_domain: Some("api.contoso.test".into()),
        target_host: None,
        target_address: None,
        shadow: false,
        freeze_seconds: 60,
        quiet_ms: 1000,
        max_drain_ms: 10_000,
        dns_wait_ms: 10_000,
    };
    gatehouse_mover::create(options, &state).unwrap();
    let report = gatehouse_mover::run(&state, gatehouse_mover::Runtime::new(Box::new(|_| {})))
        .await
        .unwrap();

    println!(
        "instance: {} entities, database {:.0} MB (populated in {populate_s:.1} s)",
        report.entities,
        db_bytes as f64 / 1e6
    );
    println!("{:<44} {:>10}", "", "seconds");
    for s in &report.steps {
        let note = if s.waited_ms > 0 {
            format!(
                "  (of which {:.2} s DNS TTL wait)",
                s.waited_ms as f64 / 1000.0
            )
        } else {
            String::new()
        };
        println!(
            "  {:<42} {:>10.2}{note}",
            s.name,
            s.duration_ms as f64 / 1000.0
        );
    }
    println!(
        "{:<44} {:>10.2}",
        "gatehouse move, end to end",
        report.total_ms as f64 / 1000.0
    );
    println!(
        "{:<44} {:>10.2}",
        "gatehouse move, without the DNS TTL wait",
        report.total_excluding_dns_wait_ms as f64 / 1000.0
    );
    println!(
        "{:<44} {:>10.2}",
        "floor: copy the source database file", floor_s
    );
    println!(
        "{:<44} {:>10}",
        "APIM: restore alone (published)", "1800-2700"
    );
    println!(
        "target: under 60 s end to end without the TTL wait; archive {} bytes; {} changes lost; {} failed requests",
        report.archive_bytes, report.changes_lost, report.failed_requests
    );
    target.shutdown().await.unwrap();
    drop(source);
}
