//! What the primary knows of the nodes of its self-hosted gateways: each node's last
//! heartbeat (revision applied, version, address, state, policies it could not compile), kept
//! in memory — a node that restarts or reconnects reports again within seconds.
//!
//! Invariant: a report is stored under the gateway its token was verified for, never under a
//! gateway the node merely names.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A node is shown as disconnected when it has not reported for this long (it reports every
/// 5 s).
pub const STALE_AFTER: Duration = Duration::from_secs(15);

/// What a node reports, every few seconds and after each revision it applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Heartbeat {
    /// The node's own id (stable across its restarts: kept in its data directory).
    pub node: String,
    pub region: Option<String>,
    pub version: String,
    /// Where the node serves (its gateway base URL).
    pub address: Option<String>,
    /// The primary's revision the node's configuration is at.
    pub revision: u64,
    /// `serving`, or `refusing` (its token expired or was revoked).
    pub state: String,
    /// APIs whose new configuration the node could not apply (it serves their previous one).
    pub failures: Vec<Value>,
}

#[derive(Debug, Clone)]
struct Report {
    beat: Heartbeat,
    at: Instant,
    wall: String,
}

/// The nodes of every gateway, by gateway id (lower case) and node id.
#[derive(Debug, Default)]
pub struct Nodes(Mutex<HashMap<String, BTreeMap<String, Report>>>);

impl Nodes {
    /// Records a node's report for `gateway` (the id its token proved).
    pub fn report(&self, gateway: &str, beat: Heartbeat) {
        let wall = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(gateway.to_ascii_lowercase()).or_default().insert(
            beat.node.clone(),
            Report {
                beat,
                at: Instant::now(),
                wall,
            },
        );
    }

    /// The lowest revision a node that reported recently has applied (what the journal must
    /// still hold for it), if any node did.
    pub fn lowest_live_revision(&self) -> Option<u64> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.values()
            .flat_map(BTreeMap::values)
            .filter(|r| r.at.elapsed() < STALE_AFTER)
            .map(|r| r.beat.revision)
            .min()
    }

    /// The nodes of `gateway` as `GET /gateways/{id}` shows them. `committed_at` gives the time
    /// (Unix ms) the first revision after a given one was committed, for the lag in time.
    pub fn render(
        &self,
        gateway: &str,
        current: u64,
        committed_at: impl Fn(u64) -> Option<i64>,
    ) -> Vec<Value> {
        let reports: Vec<Report> = {
            let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
            all.get(&gateway.to_ascii_lowercase())
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        };
        let now_ms = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        reports
            .into_iter()
            .map(|r| {
                let behind = current.saturating_sub(r.beat.revision);
                let lag_ms = if behind == 0 {
                    0
                } else {
                    committed_at(r.beat.revision).map_or(0, |t| (now_ms as i64 - t).max(0))
                };
                json!({
                    "node": r.beat.node,
                    "region": r.beat.region,
                    "version": r.beat.version,
                    "address": r.beat.address,
                    "state": r.beat.state,
                    "connected": r.at.elapsed() < STALE_AFTER,
                    "lastHeartbeat": r.wall,
                    "revision": r.beat.revision,
                    "lagRevisions": behind,
                    "lagMilliseconds": lag_ms,
                    "failures": r.beat.failures,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_kept_per_gateway_and_node() {
        let nodes = Nodes::default();
        let beat = |node: &str, revision| Heartbeat {
            node: node.into(),
            revision,
            state: "serving".into(),
            ..Default::default()
        };
        nodes.report("GW1", beat("a", 5));
        nodes.report("gw1", beat("b", 7));
        nodes.report("gw1", beat("a", 6));
        let shown = nodes.render("gw1", 7, |_| None);
        assert_eq!(shown.len(), 2);
        assert_eq!(shown[0]["node"], "a");
        assert_eq!(shown[0]["lagRevisions"], 1);
        assert_eq!(shown[1]["lagRevisions"], 0);
        assert_eq!(nodes.lowest_live_revision(), Some(6));
        assert!(nodes.render("gw2", 7, |_| None).is_empty());
    }
}
