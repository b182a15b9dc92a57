//! The move's report: step times, what moved, traffic on both sides, failed requests, changes
//! lost, downtime, and APIM's list of settings to redo by hand with what Gatehouse did with each.

use crate::options::DnsMode;
use crate::state::MoveState;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepTime {
    pub name: String,
    pub duration_ms: u64,
    pub waited_ms: u64,
    pub attempts: u32,
}

/// One item of APIM's "reconfigure after a move" list and what became of it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Carried {
    pub item: &'static str,
    pub handled: String,
    pub manual: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub id: String,
    pub outcome: String,
    pub mode: String,
    pub source: String,
    pub target: String,
    pub steps: Vec<StepTime>,
    pub total_ms: u64,
    /// The total without waiting for DNS caches (the old TTL).
    pub total_excluding_dns_wait_ms: u64,
    pub entities: u64,
    pub archive_bytes: u64,
    pub changes_replayed: u64,
    pub changes_lost: u64,
    pub requests_source: u64,
    pub requests_target: Option<u64>,
    pub failed_requests: u64,
    pub downtime_ms: u64,
    pub target_gateway: String,
    /// Where the archive's key is (never beside the archive).
    pub key_file: String,
    pub carried: Vec<Carried>,
    pub manual_steps_left: Vec<String>,
}

impl Report {
    pub fn of(s: &MoveState) -> Report {
        let o = &s.options;
        let steps: Vec<StepTime> = s
            .steps
            .iter()
            .map(|r| StepTime {
                name: r.name.clone(),
                duration_ms: r.duration_ms,
                waited_ms: r.waited_ms,
                attempts: r.attempts,
            })
            .collect();
        let total_ms = steps.iter().map(|s| s.duration_ms).sum();
        let waited: u64 = steps.iter().map(|s| s.waited_ms).sum();
        let changes_lost = s
            .step("cleanup")
            .and_then(|c| c.detail["changesLost"].as_u64())
            .unwrap_or(0);
        let (src_start, src_end) = (
            s.source_traffic_start.clone().unwrap_or_default(),
            s.source_traffic_end.clone().unwrap_or_default(),
        );
        let requests_source = src_end.requests.saturating_sub(src_start.requests);
        let failed_source = src_end.failed.saturating_sub(src_start.failed);
        // The target's own smoke requests are the move's, not clients'.
        let (requests_target, failed_target) =
            match (&s.target_traffic_start, &s.target_traffic_end) {
                (Some(a), Some(b)) => (
                    Some(
                        b.requests
                            .saturating_sub(a.requests)
                            .saturating_sub(s.smoke_requests),
                    ),
                    b.failed.saturating_sub(a.failed),
                ),
                _ => (None, 0),
            };
        let mode = match (o.same_name, o.delete_source_first) {
            (false, _) => "option 1: the target keeps its own name; the custom domain moves".into(),
            (true, false) => {
                "option 2: the target takes the source's name, without downtime".into()
            }
            (true, true) => {
                "option 2, APIM's order: the source was deleted before the restore".to_string()
            }
        };
        let target_gateway = s
            .target
            .as_ref()
            .map(|t| t.gateway_url.clone())
            .unwrap_or_default();
        let carried = carried(s);
        let mut manual_steps_left: Vec<String> = carried
            .iter()
            .filter(|c| c.manual)
            .map(|c| format!("{}: {}", c.item, c.handled))
            .collect();
        if s.outcome.as_deref() != Some("completed") {
            manual_steps_left.push(format!(
                "resume the move: gatehouse move --resume --state <move file> (it is at '{}')",
                s.steps
                    .iter()
                    .find(|r| r.status != crate::state::StepStatus::Done)
                    .map_or("the end", |r| r.name.as_str())
            ));
        }
        Report {
            id: s.id.clone(),
            outcome: s.outcome.clone().unwrap_or_else(|| "in progress".into()),
            mode,
            source: s
                .source
                .as_ref()
                .map(|i| format!("{} ({})", i.name, i.region))
                .unwrap_or_default(),
            target: s
                .target
                .as_ref()
                .map(|i| format!("{} ({})", i.name, i.region))
                .unwrap_or_default(),
            steps,
            total_ms,
            total_excluding_dns_wait_ms: total_ms.saturating_sub(waited),
            entities: s.archive_entities,
            archive_bytes: s.archive_bytes,
            changes_replayed: s.changes_replayed,
            changes_lost,
            requests_source,
            requests_target,
            failed_requests: failed_source + failed_target,
            downtime_ms: s.downtime_ms,
            target_gateway,
            key_file: o.key_file.display().to_string(),
            carried,
            manual_steps_left,
        }
    }

    /// The report for a person: a table of steps, then the figures, then the checklist.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "move {}: {}", self.id, self.outcome);
        let _ = writeln!(out, "  {}", self.mode);
        let _ = writeln!(out, "  from {} to {}", self.source, self.target);
        let _ = writeln!(out, "  step            time");
        for s in &self.steps {
            let wait = if s.waited_ms > 0 {
                format!(
                    " (of which {:.1} s waiting out the DNS TTL)",
                    s.waited_ms as f64 / 1000.0
                )
            } else {
                String::new()
            };
            let again = if s.attempts > 1 {
                format!(", {} attempts", s.attempts)
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "  {:<15} {:>7.2} s{wait}{again}",
                s.name,
                s.duration_ms as f64 / 1000.0
            );
        }
        let _ = writeln!(
            out,
            "  the archive's key is in {} (kept apart from the archive: keep it, or delete it with the archive)",
            self.key_file
        );
        let _ = writeln!(out, "  what was carried or set instead of by hand:");
        for c in &self.carried {
            let _ = writeln!(
                out,
                "    [{}] {}: {}",
                if c.manual { "manual" } else { "done" },
                c.item,
                c.handled
            );
        }
        if self.manual_steps_left.is_empty() {
            let _ = writeln!(out, "  manual steps left: none");
        } else {
            let _ = writeln!(out, "  manual steps left:");
            for m in &self.manual_steps_left {
                let _ = writeln!(out, "    - {m}");
            }
        }
        let _ = write!(
            out,
            "moved {} entities ({} bytes archived) in {:.1} s ({:.1} s without the DNS wait); {} changes replayed, {} lost; source served {} requests{}, {} failed; downtime {:.1} s",
            self.entities,
            self.archive_bytes,
            self.total_ms as f64 / 1000.0,
            self.total_excluding_dns_wait_ms as f64 / 1000.0,
            self.changes_replayed,
            self.changes_lost,
            self.requests_source,
            self.requests_target
                .map(|t| format!(", target {t}"))
                .unwrap_or_default(),
            self.failed_requests,
            self.downtime_ms as f64 / 1000.0
        );
        out
    }
}

fn carried(s: &MoveState) -> Vec<Carried> {
    let o = &s.options;
    let overlay = o.overlay.clone().unwrap_or_default();
    let mut out = vec![
        Carried {
            item: "APIs, products, policies, users, groups, subscriptions and their keys",
            handled: "carried in the archive, then every later change replayed from the journal"
                .into(),
            manual: false,
        },
        Carried {
            item: "named values (secrets too)",
            handled: format!(
                "carried, sealed in the encrypted archive{}",
                if overlay.named_values.is_empty() {
                    String::new()
                } else {
                    format!("; {} set for the target region by the overlay", overlay.named_values.len())
                }
            ),
            manual: false,
        },
        Carried {
            item: "backend URLs and API service URLs of the target region",
            handled: if overlay.backends.is_empty() && overlay.apis.is_empty() {
                "the same in both regions (no overlay given)".into()
            } else {
                format!(
                    "set by the overlay: {} backend(s), {} API(s)",
                    overlay.backends.len(),
                    overlay.apis.len()
                )
            },
            manual: false,
        },
        Carried {
            item: "certificates and custom CA certificates",
            handled: format!(
                "carried in the archive{}",
                if overlay.certificates.is_empty() {
                    String::new()
                } else {
                    format!("; {} uploaded by the overlay", overlay.certificates.len())
                }
            ),
            manual: false,
        },
        Carried {
            item: "custom domains and their TLS certificates",
            handled: if !overlay.hostnames.is_empty() {
                format!("set by the overlay: {} host name(s)", overlay.hostnames.len())
            } else if o.same_name {
                "the target took the source's host names".into()
            } else {
                "none given (no overlay host names)".into()
            },
            manual: false,
        },
        Carried {
            item: "managed identities and Key Vault access",
            handled: "not applicable: Gatehouse keeps secrets in its own sealed store".into(),
            manual: false,
        },
        Carried {
            item: "developer portal content",
            handled: "carried in the archive: pages, look, images and published revisions are resources of the instance, so the target's portal shows the same site (APIM leaves portal content out of its backups)".into(),
            manual: false,
        },
        Carried {
            item: "analytics (usage data)",
            handled: "carried in the archive".into(),
            manual: false,
        },
        Carried {
            item: "TLS protocols and ciphers, listeners, data folder",
            handled: "instance settings (flags, gatehouse.toml), not service data: the target keeps its own".into(),
            manual: false,
        },
    ];
    let dns = match (&o.dns, o.same_name) {
        (DnsMode::None, _) => Carried {
            item: "DNS of the custom domain",
            handled: format!(
                "no custom domain given: point clients at {}",
                s.target
                    .as_ref()
                    .map_or("the target's gateway", |t| t.gateway_url.as_str())
            ),
            manual: true,
        },
        (DnsMode::Rfc2136 { server, .. }, false) => Carried {
            item: "DNS of the custom domain",
            handled: format!(
                "CNAME {} switched by RFC 2136 update at {server}",
                o.custom_domain.as_deref().unwrap_or("")
            ),
            manual: false,
        },
        (DnsMode::Rfc2136 { server, .. }, true) => Carried {
            item: "DNS of the service's host name",
            handled: format!("A record switched to the target by RFC 2136 update at {server}"),
            manual: false,
        },
        (DnsMode::Manual { .. }, _) => Carried {
            item: "DNS of the custom domain",
            handled: "changed by the operator; the move checked it answered the target".into(),
            manual: false,
        },
    };
    out.push(dns);
    out
}
