//! `puce space set|unset` (replica rules) and `puce report replicas`.

use anyhow::Result;
use puce_node::config::NodeConfig;
use puce_node::identity::Identity;
use puce_node::replicas::{Known, SpaceReplicas, SpaceRule, SpaceRules, check_period, evaluate};
use puce_node::state::NodeState;
use serde_json::{Value, json};

use super::Ctx;
use super::node::{node_dir, node_err};
use crate::args::{ReplicasArgs, SpaceCommand};
use crate::output;

pub fn run_space(ctx: &Ctx, c: SpaceCommand) -> Result<i32> {
    match c {
        SpaceCommand::Set {
            space,
            copies,
            quota,
            dir,
        } => {
            let quota = match quota {
                Some(q) => Some(set_quota(ctx, &space, &q)?),
                None => None,
            };
            if let Some(copies) = copies {
                let dir = node_dir(ctx, &dir)?;
                SpaceRules::set(&dir, &space, Some(SpaceRule { copies })).map_err(node_err)?;
                if !ctx.quiet && !ctx.json {
                    println!(
                        "space '{space}': {copies} copies wanted (this node and {} peers); see \
                         `puce report replicas`",
                        copies - 1
                    );
                }
            }
            if ctx.json {
                output::json(&json!({"space": space, "copies": copies, "quota": quota}))?;
            }
        }
        SpaceCommand::Unset { space, dir } => {
            let dir = node_dir(ctx, &dir)?;
            SpaceRules::set(&dir, &space, None).map_err(node_err)?;
            if !ctx.quiet && !ctx.json {
                println!("space '{space}' has no replica rule now");
            }
        }
    }
    Ok(0)
}

/// Set (or with `none`, remove) the quota of `space` in the repository's space settings; the
/// quota set.
fn set_quota(ctx: &Ctx, space: &str, text: &str) -> Result<Option<u64>> {
    let quota = if text.trim() == "none" {
        None
    } else {
        Some(puce_node::config::parse_size(text).map_err(node_err)?)
    };
    let repo = ctx.open()?;
    let mut s = repo.space_settings(space)?.unwrap_or_default();
    s.quota = quota;
    s.updated_ns = puce_core::index::now_ns();
    repo.put_space_settings(space, &s)?;
    if !ctx.quiet && !ctx.json {
        match quota {
            Some(q) => {
                let used = puce_core::ledger::space_use(&repo, space)?;
                println!(
                    "space '{space}': quota {} (uses {} now: stored bytes its snapshots reach)",
                    output::size(q),
                    output::size(used)
                );
            }
            None => println!("space '{space}' has no quota now"),
        }
    }
    Ok(quota)
}

pub fn run_report(ctx: &Ctx, a: ReplicasArgs) -> Result<i32> {
    let repo = ctx.open()?;
    let dir = node_dir(ctx, &a.dir)?;
    let config = NodeConfig::load(&dir).map_err(node_err)?;
    let id = Identity::load(&dir).map_err(node_err)?;
    let state = NodeState::load(&dir).map_err(node_err)?;
    let rules = SpaceRules::load(&dir).map_err(node_err)?;
    let snapshots = repo.snapshots()?;
    let receipts = puce_core::reach::receipts(&repo)?;
    let lineage = puce_core::forgotten::lineage(&repo, &snapshots)?;
    let now = puce_core::index::now_ns();
    let k = Known {
        config: &config,
        id: id.id().to_string(),
        state: &state,
        snapshots: &snapshots,
        receipts: &receipts,
        lineage: &lineage,
        rules: &rules,
        now_ns: now,
    };
    let mut spaces = evaluate(&k);
    if let Some(s) = &a.space {
        spaces.retain(|r| &r.space == s);
        if spaces.is_empty() {
            anyhow::bail!(puce_core::Error::not_found(format!(
                "space '{s}' has no snapshots here and no rule (see `puce snapshots`)"
            )));
        }
    }
    let broken = spaces.iter().any(|s| s.ok == Some(false));
    let period = check_period(&config);
    if let Some(p) = &a.html {
        let page = crate::html::tables_page(
            &format!("puce: replicas on node '{}'", config.name),
            &output::time(now),
            &spaces.iter().map(|s| section(s, now)).collect::<Vec<_>>(),
        );
        std::fs::write(p, page)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
    }
    if ctx.json {
        output::json(&json!({
            "ok": !broken,
            "check_period_seconds": period.as_secs(),
            "spaces": spaces.iter().map(|s| space_json(s, now)).collect::<Vec<_>>(),
        }))?;
    } else {
        print(&spaces, now, period);
    }
    Ok(i32::from(broken))
}

/// The rule's state of space `s`, in words.
fn rule_text(s: &SpaceReplicas) -> String {
    match (s.wanted, s.ok) {
        (Some(w), Some(true)) => format!("{} of {w} copies wanted: ok", s.counted),
        (Some(w), _) => format!("{} of {w} copies wanted: RULE BROKEN", s.counted),
        (None, _) => format!("{} copies (no rule: `puce space set`)", s.counted),
    }
}

/// Space `s` as a section of the HTML page: one row per node.
fn section(s: &SpaceReplicas, now: i64) -> crate::html::Section {
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    crate::html::Section {
        heading: format!("space '{}'", s.space),
        status: rule_text(s),
        ok: s.ok,
        head: vec!["node", "complete", "as of", "checked", "counts", "why not"],
        rows: s
            .copies
            .iter()
            .map(|c| {
                vec![
                    if c.this_node {
                        format!("{} (this node)", c.node)
                    } else {
                        c.node.clone()
                    },
                    yes_no(c.complete),
                    age_seconds(c.as_of_ns, now).map_or("never".into(), |a| age(a) + " ago"),
                    checked_text(c, now),
                    yes_no(c.counts),
                    c.why_not.clone().unwrap_or_default(),
                ]
            })
            .collect(),
    }
}

/// Whether a copy's data was checked, and since when all of it was read.
fn checked_text(c: &puce_node::replicas::Copy, now: i64) -> String {
    let since = age_seconds(c.checked_ns, now).map(|a| format!(" (all read {} ago)", age(a)));
    format!(
        "{}{}",
        if c.checked { "yes" } else { "no" },
        since.unwrap_or_default()
    )
}

fn age_seconds(as_of: Option<i64>, now: i64) -> Option<u64> {
    as_of.map(|t| (now.saturating_sub(t).max(0) / 1_000_000_000) as u64)
}

fn space_json(s: &SpaceReplicas, now: i64) -> Value {
    json!({
        "space": s.space,
        "heads": s.heads,
        "copies_wanted": s.wanted,
        "copies": s.counted,
        "ok": s.ok,
        "nodes": s.copies.iter().map(|c| json!({
            "node": c.node,
            "id": c.id,
            "this_node": c.this_node,
            "heads": c.heads,
            "complete": c.complete,
            "as_of": c.as_of_ns.map(output::time_utc),
            "age_seconds": age_seconds(c.as_of_ns, now),
            "checked": c.checked,
            "checked_since": c.checked_ns.map(output::time_utc),
            "checked_age_seconds": age_seconds(c.checked_ns, now),
            "counts": c.counts,
            "why_not": c.why_not,
        })).collect::<Vec<_>>(),
    })
}

/// A duration for people: `3 d`, `5 h`, `12 min`, `40 s`.
fn age(secs: u64) -> String {
    match secs {
        s if s >= 2 * 86400 => format!("{} d", s / 86400),
        s if s >= 2 * 3600 => format!("{} h", s / 3600),
        s if s >= 120 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

fn print(spaces: &[SpaceReplicas], now: i64, period: std::time::Duration) {
    for (i, s) in spaces.iter().enumerate() {
        if i > 0 {
            println!();
        }
        let rule = rule_text(s);
        println!(
            "space '{}': {rule}; heads {}",
            s.space,
            s.heads
                .iter()
                .map(|h| h.get(..8).unwrap_or(h))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut t = output::table(
            &["NODE", "HEADS", "AS OF", "AGE", "CHECKED", "COUNTS"],
            &[3],
        );
        for c in &s.copies {
            t.add_row(vec![
                if c.this_node {
                    format!("{} (this node)", c.node)
                } else {
                    c.node.clone()
                },
                format!("{}/{}", c.heads.len(), s.heads.len()),
                c.as_of_ns.map(output::time).unwrap_or_else(|| "-".into()),
                age_seconds(c.as_of_ns, now)
                    .map(age)
                    .unwrap_or_else(|| "-".into()),
                checked_text(c, now),
                match &c.why_not {
                    None => "yes".to_string(),
                    Some(w) => format!("no: {w}"),
                },
            ]);
        }
        output::print_table(&t);
    }
    println!(
        "\n(A copy counts when complete, confirmed within the check period ({}), and its node's \
         checks read all of its data within that period and left no damage unhealed; a peer \
         says so itself at each sync this node starts.)",
        age(period.as_secs())
    );
}
