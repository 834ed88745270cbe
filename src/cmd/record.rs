//! The one decision record a run logs and `plan` prints: what was seen,
//! what was decided and why, and the daemon's command line.

use serde::Serialize;
use tracing::info;

use crate::decide::{Decision, Facts};

/// The one decision record a run logs (and `plan` prints).
#[derive(Serialize)]
pub(super) struct Record<'a> {
    pub(super) event: &'static str,
    pub(super) discovery: &'a str,
    pub(super) instance_id: &'a str,
    pub(super) advertise_ip: std::net::IpAddr,
    pub(super) advertise_source: &'a str,
    pub(super) rounds: u32,
    pub(super) elapsed_ms: u64,
    pub(super) facts: &'a Facts,
    pub(super) decision: &'a Decision,
    pub(super) reason_text: String,
    pub(super) daemon_argv: Vec<String>,
}

/// The most of a decision record logged in one line (CloudWatch drops
/// events over 256 KB; a record of 1,000 peers is megabytes).
const MAX_RECORD: usize = 64 << 10;

/// A record over `max` bytes with its long lists cut to their first entries,
/// each with its full count beside it (`<name>_total`).
fn compact_record(mut v: serde_json::Value, max: usize) -> serde_json::Value {
    if v.to_string().len() <= max {
        return v;
    }
    for keep in [20usize, 5, 0] {
        for (obj, key) in [
            ("facts", "peers"),
            ("facts", "unidentified"),
            ("decision", "peerstore"),
            ("decision", "proposal"),
        ] {
            let Some(o) = v.get_mut(obj).and_then(|o| o.as_object_mut()) else {
                continue;
            };
            let Some(list) = o.get_mut(key).and_then(|l| l.as_array_mut()) else {
                continue;
            };
            let total = list.len();
            if total > keep {
                list.truncate(keep);
                o.insert(format!("{key}_total"), total.into());
            }
        }
        v["truncated"] = true.into();
        if v.to_string().len() <= max {
            break;
        }
    }
    v
}

impl Record<'_> {
    /// Logs the record as one event, at most `MAX_RECORD` bytes.
    pub(super) fn log(&self) {
        let r = self;
        let value = serde_json::to_value(r).unwrap_or_default();
        let json = compact_record(value, MAX_RECORD).to_string();
        let action = serde_json::to_value(&r.decision.action)
            .ok()
            .and_then(|v| v["action"].as_str().map(str::to_owned))
            .unwrap_or_default();
        info!(event = "decision", action = %action, reason = %r.reason_text, record = %json, "decision: {action}: {}", r.reason_text);
    }

    /// Prints the whole record (`plan`).
    pub(super) fn print(&self) {
        super::print_json(self);
    }
}

#[cfg(test)]
mod tests {
    use super::{compact_record, MAX_RECORD};

    /// A record of 1,000 peers fits one log event, with the counts kept.
    #[test]
    fn a_large_decision_record_is_logged_in_bounded_size() {
        let peer = |i: usize| serde_json::json!({"registration": {"peer_id": format!("12D3KooW{i:0>44}"), "ip": "10.0.0.1"}, "probe": {"state": "api", "cluster_peers": vec!["12D3KooWxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"; 50]}});
        let peers: Vec<serde_json::Value> = (0..1000).map(peer).collect();
        let record = serde_json::json!({
            "event": "decision",
            "facts": {"expect": 3, "peers": peers, "unidentified": []},
            "decision": {"action": {"action": "join"}, "peerstore": vec!["/ip4/10.0.0.1/tcp/9096/p2p/x"; 1000]},
        });
        assert!(record.to_string().len() > 1 << 20);
        let small = compact_record(record, MAX_RECORD);
        assert!(small.to_string().len() <= MAX_RECORD, "{}", small.to_string().len());
        assert_eq!(small["facts"]["peers_total"], 1000);
        assert_eq!(small["decision"]["peerstore_total"], 1000);
        assert_eq!(small["truncated"], true);
        assert_eq!(small["facts"]["expect"], 3);
        let tiny = serde_json::json!({"facts": {"peers": [1, 2]}});
        assert_eq!(compact_record(tiny.clone(), MAX_RECORD), tiny);
    }
}
