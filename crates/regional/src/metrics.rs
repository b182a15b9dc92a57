//! The gateway's own Prometheus metrics (`--metrics-listen`): the gateway's counters and
//! histograms, each sample labelled with the gateway's region, and the link's state.
//!
//! Invariant: no secret is in them (subscription ids, not keys; no URLs with credentials).

use crate::follow::NodeState;
use std::fmt::Write;

/// Adds `region="…"` to every sample of Prometheus text (comments are left as they are).
pub fn with_region(text: &str, region: &str) -> String {
    let value = region
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for line in text.lines() {
        if line.starts_with('#') || line.is_empty() {
            out.push_str(line);
        } else if let Some(brace) = line
            .find('{')
            .filter(|b| line.find(' ').is_none_or(|s| b < &s))
        {
            let _ = write!(
                out,
                "{}{{region=\"{value}\",{}",
                &line[..brace],
                &line[brace + 1..]
            );
        } else if let Some(space) = line.find(' ') {
            let _ = write!(
                out,
                "{}{{region=\"{value}\"}}{}",
                &line[..space],
                &line[space..]
            );
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The link's state as metrics.
pub fn link_state(state: &NodeState) -> String {
    format!(
        "# HELP gatehouse_gateway_primary_connected Whether the stream from the primary is connected.\n# TYPE gatehouse_gateway_primary_connected gauge\ngatehouse_gateway_primary_connected {}\n# HELP gatehouse_gateway_primary_revision The primary's revision this gateway's configuration is at.\n# TYPE gatehouse_gateway_primary_revision gauge\ngatehouse_gateway_primary_revision {}\n# HELP gatehouse_gateway_refusing Whether the gateway refuses traffic (its token was refused).\n# TYPE gatehouse_gateway_refusing gauge\ngatehouse_gateway_refusing {}\n",
        u8::from(state.connected),
        state.revision,
        u8::from(state.refused.is_some()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sample_gets_the_region() {
        let text = "# HELP a A.\n# TYPE a counter\na{api=\"x\"} 3\nb 4\nc_bucket{le=\"0.1\"} 1\n";
        let labelled = with_region(text, "west\"eu");
        assert_eq!(
            labelled,
            "# HELP a A.\n# TYPE a counter\na{region=\"west\\\"eu\",api=\"x\"} 3\nb{region=\"west\\\"eu\"} 4\nc_bucket{region=\"west\\\"eu\",le=\"0.1\"} 1\n"
        );
    }
}
