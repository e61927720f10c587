//! Replica health: a rule per space (`puce space set SPACE --copies N`: this node plus at
//! least N-1 peers hold the space's current heads), kept in `NODE_DIR/spaces.json`, and its
//! evaluation from what this node already knows, for `puce report replicas` and the metrics.
//!
//! What counts as a copy, as of the last contact with each node:
//! - this node: it holds the heads; its data counts as checked when the daemon's last check
//!   ran within the check period and found nothing, or healed what it found (nothing lost, no
//!   error);
//! - a peer: it held every head, complete, as of the last contact within the check period. A
//!   peer lists in `SpaceList` only snapshots it committed, which it does only once everything
//!   they reach is durable (`docs/protocol.md`); a pushed snapshot is committed when `PushDone`
//!   answers; a receipt (`receipts/`) records a peer that delivered a snapshot. Whether the
//!   peer checked its data is not exchanged by `puce/sync/1`: it is reported as unknown.
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
use crate::state::NodeState;

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
    /// Whether its data was checked within the check period: `None` when unknown (peers).
    pub checked: Option<bool>,
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
    let checked = check.is_some_and(|c| {
        k.config.check.is_some()
            && fresh(c.last_ns)
            && c.lost == 0
            && c.error.is_none()
            && (c.ok || c.healed > 0)
    });
    copies.push(Copy {
        node: k.config.name.clone(),
        id: k.id.clone(),
        this_node: true,
        heads: heads.clone(),
        complete: !heads.is_empty(),
        as_of_ns: Some(k.now_ns),
        checked: Some(checked),
        counts: checked && !heads.is_empty(),
        why_not: if heads.is_empty() {
            Some("no snapshot of the space here".into())
        } else if !checked {
            Some(if k.config.check.is_none() {
                "the daemon does not check the data ([check] in node.toml)".into()
            } else {
                "no data check without unhealed damage within the check period".into()
            })
        } else {
            None
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
            None
        };
        copies.push(Copy {
            node: p.name.clone(),
            id: pid,
            this_node: false,
            heads: held,
            complete,
            as_of_ns: as_of,
            checked: None,
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
