//! Replica health: a rule per space (`puce space set SPACE --copies N`: this node plus at
//! least N-1 peers hold the space's current heads), kept in `NODE_DIR/spaces.json`, and its
//! evaluation from what this node already knows, for `puce report replicas` and the metrics.
//!
//! A copy counts only if its node holds every head complete and its data was checked within the
//! check period:
//! - this node: it holds the heads; its checks read all of its data within the check period
//!   (the oldest reading still the latest of some pack is that recent:
//!   [`CheckState::covered_ns`]) and left no damage unhealed;
//! - a peer: it held every head, complete, as of the last contact within the check period (it
//!   lists in `SpaceList` only snapshots it committed, which it does only once everything they
//!   reach is durable; a pushed snapshot is committed when `PushDone` answers; a receipt
//!   records a peer that delivered a snapshot), **and** at the last sync this node started it
//!   said (`GetChecks`, protocol revision 4) that it holds each head complete, that its checks
//!   read all of its data within the check period, and that they left no damage unhealed. The
//!   peer speaks for itself: see `docs/protocol.md`, "Checks". A peer of an older revision
//!   says nothing, and its copy does not count.
//!
//! The check period is the time a rotation of the sampled check takes (`[check] interval` /
//! `sample`), [`DEFAULT_PERIOD`] without `[check]`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use puce_core::format::receipt::Receipt;
use puce_core::format::snapshot::SnapshotEntry;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::state::{CheckState, NodeState};

/// File of the rules in the node directory.
pub const RULES_FILE: &str = "spaces.json";
/// The check period without `[check]` (the default check, 5 % a day, reads everything in it).
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(20 * 86400);
/// Largest number of copies a rule may ask for.
pub const MAX_COPIES: u32 = 64;

/// The rule of one space.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpaceRule {
    /// Copies wanted, this node's included.
    pub copies: u32,
}

/// The rules, by space (`spaces.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpaceRules {
    /// By space name.
    pub spaces: BTreeMap<String, SpaceRule>,
}

impl SpaceRules {
    /// Read the rules (none if there is no file).
    pub fn load(dir: &Path) -> Result<SpaceRules> {
        let p = dir.join(RULES_FILE);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!(
                        "{} is damaged ({e}): fix it or remove it and set the rules again with \
                         `puce space set`",
                        p.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SpaceRules::default()),
            Err(e) => Err(puce_core::Error::io("cannot read", &p, e).into()),
        }
    }

    /// Set (`Some`) or remove (`None`) the rule of `space`, durably.
    pub fn set(dir: &Path, space: &str, rule: Option<SpaceRule>) -> Result<()> {
        puce_core::format::snapshot::check_space_name(space)?;
        if let Some(r) = rule
            && !(1..=MAX_COPIES).contains(&r.copies)
        {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "--copies {}: give 1 (this node only) to {MAX_COPIES}",
                    r.copies
                ),
            ));
        }
        crate::state::locked(dir, || {
            let mut rules = SpaceRules::load(dir)?;
            match rule {
                Some(r) => rules.spaces.insert(space.to_string(), r),
                None => rules.spaces.remove(space),
            };
            let bytes = serde_json::to_vec_pretty(&rules)
                .map_err(|e| Error::internal(format!("cannot encode the rules: {e}")))?;
            puce_core::fsutil::write_atomic(&dir.join(RULES_FILE), dir, &bytes)?;
            Ok(())
        })
    }
}

/// One node's copy of a space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Copy {
    /// The node's name (this node's, or the peer's in `node.toml`).
    pub node: String,
    /// Its id.
    pub id: String,
    /// Whether it is this node.
    pub this_node: bool,
    /// The heads (of this node's history) it held, hex ids.
    pub heads: Vec<String>,
    /// Whether it held every head.
    pub complete: bool,
    /// When what is known of its copy was last confirmed, ns since the epoch.
    pub as_of_ns: Option<i64>,
    /// Since when all of its data was read by its checks, ns since the epoch (for a peer: as
    /// it said at the last sync this node started).
    pub checked_ns: Option<i64>,
    /// Whether its data was checked within the check period, leaving no damage unhealed.
    pub checked: bool,
    /// Whether it counts towards the rule.
    pub counts: bool,
    /// Why it does not count, if it does not.
    pub why_not: Option<String>,
}

/// The replicas of one space.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpaceReplicas {
    /// The space.
    pub space: String,
    /// Its heads here, hex ids.
    pub heads: Vec<String>,
    /// Copies the rule wants, if there is a rule.
    pub wanted: Option<u32>,
    /// Copies that count.
    pub counted: u32,
    /// Whether the rule holds (`None`: no rule).
    pub ok: Option<bool>,
    /// This node first, then each peer that may hold the space.
    pub copies: Vec<Copy>,
}

/// What this node knows, to evaluate the rules.
#[derive(Debug)]
pub struct Known<'a> {
    /// This node's configuration.
    pub config: &'a NodeConfig,
    /// This node's id.
    pub id: String,
    /// The node state.
    pub state: &'a NodeState,
    /// Every snapshot here.
    pub snapshots: &'a [SnapshotEntry],
    /// Every receipt here.
    pub receipts: &'a [Receipt],
    /// The parents of forgotten snapshots ([`puce_core::forgotten::lineage`]).
    pub lineage: &'a puce_core::history::Lineage,
    /// The rules.
    pub rules: &'a SpaceRules,
    /// Now, ns since the epoch.
    pub now_ns: i64,
}

/// The check period of `config` (see the module documentation).
pub fn check_period(config: &NodeConfig) -> Duration {
    match config.check {
        Some(c) => c.interval.div_f64(c.sample),
        None => DEFAULT_PERIOD,
    }
}

/// Evaluate the replicas of every space here or with a rule, by name.
pub fn evaluate(k: &Known) -> Vec<SpaceReplicas> {
    let mut names: Vec<String> = k
        .snapshots
        .iter()
        .map(|s| s.snapshot.space.clone())
        .collect();
    names.extend(k.rules.spaces.keys().cloned());
    names.sort();
    names.dedup();
    names.iter().map(|s| evaluate_space(k, s)).collect()
}

/// Why a copy whose checks are described does not count, if it does not: `covered_ns` since
/// when all of its data was read, `damaged` whether damage is left unhealed.
fn check_fault(k: &Known, covered_ns: Option<i64>, damaged: bool) -> Option<String> {
    let period_ns = i64::try_from(check_period(k.config).as_nanos()).unwrap_or(i64::MAX);
    if damaged {
        return Some("its checks found damage that is not healed".into());
    }
    match covered_ns {
        None => Some("its checks have not yet read all of its data ([check] in node.toml)".into()),
        Some(t) if k.now_ns.saturating_sub(t) > period_ns => Some(format!(
            "its data was last read in full {:.1} days ago, longer than the check period",
            k.now_ns.saturating_sub(t) as f64 / 86400e9
        )),
        Some(_) => None,
    }
}

fn evaluate_space(k: &Known, space: &str) -> SpaceReplicas {
    let period_ns = i64::try_from(check_period(k.config).as_nanos()).unwrap_or(i64::MAX);
    let fresh = |t: Option<i64>| t.is_some_and(|t| k.now_ns.saturating_sub(t) <= period_ns);
    let heads: Vec<String> = puce_core::history::heads(k.snapshots, k.lineage, space)
        .iter()
        .map(|s| s.id.to_hex())
        .collect();
    let mut copies = Vec::new();
    // This node.
    let check = k.state.check.as_ref();
    let covered = check.and_then(CheckState::covered_ns);
    let fault = if k.config.check.is_none() {
        Some("the daemon does not check the data ([check] in node.toml)".to_string())
    } else {
        check_fault(k, covered, check.is_some_and(CheckState::damaged))
    };
    copies.push(Copy {
        node: k.config.name.clone(),
        id: k.id.clone(),
        this_node: true,
        heads: heads.clone(),
        complete: !heads.is_empty(),
        as_of_ns: Some(k.now_ns),
        checked_ns: covered,
        checked: fault.is_none(),
        counts: fault.is_none() && !heads.is_empty(),
        why_not: if heads.is_empty() {
            Some("no snapshot of the space here".into())
        } else {
            fault
        },
    });
    // The peers that may hold it (either direction).
    for p in &k.config.peers {
        let a = p.access(space);
        if !a.pull && !a.push {
            continue;
        }
        let pid = p.id.to_string();
        let st = k.state.peers.get(&pid);
        let listed: &[String] = st
            .and_then(|s| s.spaces.get(space))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let listed_at =
            st.and_then(|s| s.space_success_ns.get(space).copied().or(s.last_success_ns));
        let mut held = Vec::new();
        let mut as_of: Option<i64> = None;
        for h in &heads {
            let mut at = listed.contains(h).then_some(listed_at).flatten();
            for r in k.receipts {
                if r.sender == p.id.0 && r.snapshot.to_hex() == *h {
                    at = at.max(Some(r.arrived_ns));
                }
            }
            if let Some(t) = at {
                held.push(h.clone());
                as_of = Some(as_of.map_or(t, |a: i64| a.min(t)));
            }
        }
        let complete = !heads.is_empty() && held.len() == heads.len();
        let said = st.and_then(|s| s.checks.get(space));
        let unchecked = match (st.and_then(|s| s.checks_missing.as_ref()), said) {
            (Some(m), _) => Some(format!("unchecked: {m}")),
            (None, None) => Some(
                "unchecked: it has not said whether it checks its data (it says so at a sync \
                 this node starts, for the spaces it lets this node read or write)"
                    .into(),
            ),
            (None, Some(c)) if !heads.iter().all(|h| c.held.contains(h)) => Some(
                "it did not say it holds every head complete at the last sync this node started"
                    .into(),
            ),
            (None, Some(c)) => {
                check_fault(k, c.checked_ns, c.damaged).map(|f| format!("it says {f}"))
            }
        };
        let why_not = if !complete {
            Some(if st.is_none_or(|s| s.last_success_ns.is_none()) {
                if st.is_some_and(|s| s.last_error.is_some()) {
                    "never synced (the last attempt failed)".to_string()
                } else {
                    "never synced".to_string()
                }
            } else {
                format!(
                    "held {} of {} heads at the last contact",
                    held.len(),
                    heads.len()
                )
            })
        } else if !fresh(as_of) {
            Some("last confirmed longer ago than the check period".into())
        } else {
            unchecked.clone()
        };
        copies.push(Copy {
            node: p.name.clone(),
            id: pid,
            this_node: false,
            heads: held,
            complete,
            as_of_ns: as_of,
            checked_ns: said.and_then(|c| c.checked_ns),
            checked: unchecked.is_none(),
            counts: why_not.is_none(),
            why_not,
        });
    }
    let counted = copies.iter().filter(|c| c.counts).count() as u32;
    let wanted = k.rules.spaces.get(space).map(|r| r.copies);
    SpaceReplicas {
        space: space.to_string(),
        heads,
        wanted,
        counted,
        ok: wanted.map(|w| counted >= w),
        copies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{PeerCheck, PeerState, RotationStep};
    use puce_core::format::snapshot::{Snapshot, Summary};
    use puce_core::{Hash, ObjectId, SnapshotId};

    const DAY: i64 = 86_400_000_000_000;

    fn config() -> NodeConfig {
        let peer = crate::identity::NodeId([9u8; 32]).to_string();
        NodeConfig::parse(&format!(
            "[node]\nname = \"grenoble\"\n[check]\ninterval = \"1d\"\nsample = \"100%\"\n\
             [[peer]]\nname = \"lyon\"\nid = \"{peer}\"\nspaces = {{ docs = [\"push\"] }}\n"
        ))
        .unwrap()
    }

    /// The copy of peer lyon, whose state is `peer`, of a space of one head.
    fn lyon(peer: PeerState, now_ns: i64) -> Copy {
        let c = config();
        let head = SnapshotEntry {
            id: SnapshotId(Hash([1; 32])),
            snapshot: Snapshot {
                time_ns: 0,
                space: "docs".into(),
                host: "h".into(),
                user: "u".into(),
                source: "/".into(),
                tags: vec![],
                parents: vec![],
                root: ObjectId(Hash([2; 32])),
                summary: Summary::default(),
                origin: String::new(),
            },
        };
        let mut state = NodeState::default();
        state.peers.insert(c.peers[0].id.to_string(), peer);
        state.check = Some(CheckState {
            previous_rotation: vec![RotationStep {
                started_ns: now_ns - DAY / 2,
                position: 1.0,
                clean: true,
            }],
            ..CheckState::default()
        });
        let snapshots = [head];
        let k = Known {
            config: &c,
            id: "me".into(),
            state: &state,
            snapshots: &snapshots,
            receipts: &[],
            lineage: &Default::default(),
            rules: &SpaceRules::default(),
            now_ns,
        };
        let r = evaluate(&k).remove(0);
        assert!(r.copies[0].counts, "this node: {:?}", r.copies[0]);
        r.copies[1].clone()
    }

    #[test]
    fn a_peer_copy_counts_only_as_checked_as_the_peer_says() {
        let now = 100 * DAY;
        let head = SnapshotId(Hash([1; 32])).to_hex();
        let listed = |checks: Option<PeerCheck>, missing: Option<&str>| PeerState {
            last_success_ns: Some(now - DAY / 4),
            spaces: [("docs".to_string(), vec![head.clone()])].into(),
            checks: checks
                .map(|c| ("docs".to_string(), c))
                .into_iter()
                .collect(),
            checks_missing: missing.map(str::to_string),
            ..PeerState::default()
        };
        let said = |held: bool, checked_ns: Option<i64>, damaged: bool| PeerCheck {
            asked_ns: now - DAY / 4,
            held: if held { vec![head.clone()] } else { vec![] },
            checked_ns,
            damaged,
        };
        let good = lyon(
            listed(Some(said(true, Some(now - DAY / 2), false)), None),
            now,
        );
        assert!(good.counts && good.checked, "{good:?}");
        assert_eq!(good.checked_ns, Some(now - DAY / 2));
        for (state, why) in [
            (
                listed(None, Some("it speaks protocol revision 3")),
                "unchecked: it speaks protocol revision 3",
            ),
            (
                listed(None, None),
                "unchecked: it has not said whether it checks",
            ),
            (
                listed(Some(said(false, Some(now), false)), None),
                "it did not say it holds every head complete",
            ),
            (
                listed(Some(said(true, Some(now - 2 * DAY), false)), None),
                "it says its data was last read in full 2.0 days ago, longer than the check period",
            ),
            (
                listed(Some(said(true, None, false)), None),
                "it says its checks have not yet read all of its data ([check] in node.toml)",
            ),
            (
                listed(Some(said(true, Some(now), true)), None),
                "it says its checks found damage that is not healed",
            ),
        ] {
            let c = lyon(state, now);
            assert!(!c.counts && !c.checked && c.complete, "{c:?}");
            let got = c.why_not.unwrap_or_default();
            assert!(got.starts_with(why), "{got} (wanted {why})");
        }
    }
}
