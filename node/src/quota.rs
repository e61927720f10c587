//! Quotas in monitoring: the use of each peer's quota (`quota` in node.toml, the ledger's
//! [`puce_core::ledger::OwnerUse::quota_use`]) and of each space's (`puce space set --quota`),
//! computed with the repository figures ([`crate::metrics`], in the background), shown as
//! gauges, and the notification events: a quota 90 % used, and a transfer refused by a quota.

use puce_core::Repo;

use crate::config::NodeConfig;
use crate::error::Result;
use crate::notify::Event;
use crate::state::NodeState;

/// Share of a quota at which an event is raised.
pub const WARN_SHARE: f64 = 0.9;

/// The use of one quota, or of a peer without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaUse {
    /// `peer` or `space`.
    pub kind: &'static str,
    /// The peer's or the space's name.
    pub name: String,
    /// Stored bytes counted against it.
    pub used: u64,
    /// The quota, if one is set.
    pub quota: Option<u64>,
}

/// Every configured peer's use (with its quota, if any) and every space quota's use.
pub fn uses(repo: &Repo, config: &NodeConfig) -> Result<Vec<QuotaUse>> {
    let mut out = Vec::new();
    if !config.peers.is_empty() {
        let ledger = puce_core::ledger::compute(repo)?;
        for p in &config.peers {
            out.push(QuotaUse {
                kind: "peer",
                name: p.name.clone(),
                used: ledger.peer(&p.id.0).quota_use(),
                quota: p.quota,
            });
        }
    }
    for (space, s) in repo.all_space_settings()? {
        if let Some(q) = s.quota {
            out.push(QuotaUse {
                kind: "space",
                name: space.clone(),
                used: puce_core::ledger::space_use(repo, &space)?,
                quota: Some(q),
            });
        }
    }
    Ok(out)
}

fn size(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

/// The events: a quota used at [`WARN_SHARE`] or more; a peer whose last sync a quota refused.
pub fn events(uses: &[QuotaUse], state: &NodeState, out: &mut Vec<Event>) {
    for u in uses {
        let Some(q) = u.quota.filter(|q| u.used as f64 >= WARN_SHARE * *q as f64) else {
            continue;
        };
        let full = u.used >= q;
        let what = if u.kind == "peer" {
            format!("Peer {}", u.name)
        } else {
            format!("Space '{}'", u.name)
        };
        let todo = if u.kind == "peer" {
            "Transfers from it are refused once it is reached: raise `quota` in node.toml \
             (then reload the daemon: `systemctl reload puce-node`), or free space (`puce node drop`, `puce gc`)."
        } else {
            "Snapshots and writes through the mount are refused once it is reached: raise it \
             with `puce space set`, or free space (`puce forget`, `puce gc`)."
        };
        out.push(Event {
            key: format!("quota/{}/{}", u.kind, u.name),
            kind: "quota",
            severity: if full { "critical" } else { "warning" },
            state: if full { "full".into() } else { "90 %".into() },
            title: format!(
                "{what} uses {:.0} % of its quota",
                u.used as f64 * 100.0 / q.max(1) as f64
            ),
            message: format!(
                "{what} uses {} of its quota of {}. {todo}",
                size(u.used),
                size(q)
            ),
            one_off: false,
        });
    }
    for p in state.peers.values() {
        let Some(e) = p
            .last_error
            .as_deref()
            .filter(|e| e.contains("quota exceeded"))
        else {
            continue;
        };
        out.push(Event {
            key: format!("quota_refused/{}", p.name),
            kind: "quota_refused",
            severity: "critical",
            state: "refused".into(),
            title: format!("A transfer with {} was refused by a quota", p.name),
            message: format!("The last sync with {} failed: {e}", p.name),
            one_off: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PeerState;

    fn u(kind: &'static str, used: u64, quota: Option<u64>) -> QuotaUse {
        QuotaUse {
            kind,
            name: "x".into(),
            used,
            quota,
        }
    }

    #[test]
    fn events_at_90_percent_when_full_and_after_a_refusal() {
        let mut state = NodeState::default();
        let mut out = Vec::new();
        events(
            &[
                u("peer", 89, Some(100)),
                u("peer", 500, None),
                u("space", 90, Some(100)),
            ],
            &state,
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].key.as_str(), out[0].state.as_str(), out[0].severity),
            ("quota/space/x", "90 %", "warning")
        );
        assert!(
            out[0].message.contains("puce space set"),
            "{}",
            out[0].message
        );
        out.clear();
        state.peers.insert(
            "id".into(),
            PeerState {
                name: "lyon".into(),
                last_error: Some("peer 'g' reports: quota exceeded: peer 'lyon' uses".into()),
                ..PeerState::default()
            },
        );
        events(&[u("peer", 100, Some(100))], &state, &mut out);
        let keys: Vec<(&str, &str, &str)> = out
            .iter()
            .map(|e| (e.key.as_str(), e.state.as_str(), e.severity))
            .collect();
        assert_eq!(
            keys,
            [
                ("quota/peer/x", "full", "critical"),
                ("quota_refused/lyon", "refused", "critical")
            ]
        );
    }
}
