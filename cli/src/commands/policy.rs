use anyhow::Result;
use comfy_table::Cell;
use puce_core::format::space::SpaceSettings;
use serde_json::json;

use super::Ctx;
use crate::args::PolicyCommand;
use crate::output;

pub fn run(ctx: &Ctx, c: PolicyCommand) -> Result<i32> {
    let repo = ctx.open()?;
    match c {
        PolicyCommand::Set { space, policy } => {
            if policy.is_empty() {
                anyhow::bail!(puce_core::Error::invalid(
                    "give at least one --keep-* rule (use `puce policy unset` to remove a policy)"
                ));
            }
            let s = SpaceSettings {
                policy,
                updated_ns: puce_core::index::now_ns(),
                ..repo.space_settings(&space)?.unwrap_or_default()
            };
            repo.put_space_settings(&space, &s)?;
            if ctx.json {
                output::json(&json!({"space": space, "policy": s.policy}))?;
            } else if !ctx.quiet {
                println!("policy of space '{space}': {}", s.policy.describe());
            }
        }
        PolicyCommand::Unset { space } => {
            // The space's quota stays.
            match repo.space_settings(&space)?.and_then(|s| s.quota) {
                Some(quota) => repo.put_space_settings(
                    &space,
                    &SpaceSettings {
                        quota: Some(quota),
                        updated_ns: puce_core::index::now_ns(),
                        ..SpaceSettings::default()
                    },
                )?,
                None => repo.remove_space_settings(&space)?,
            }
            if !ctx.quiet && !ctx.json {
                println!("space '{space}' has no policy now (its snapshots are kept)");
            }
        }
        PolicyCommand::Show { space } => {
            let all: Vec<(String, SpaceSettings)> = repo
                .all_space_settings()?
                .into_iter()
                .filter(|(n, _)| space.as_ref().is_none_or(|s| s == n))
                .collect();
            if ctx.json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(n, s)| json!({"space": n, "policy": s.policy, "updated": output::time_utc(s.updated_ns)}))
                    .collect();
                output::json(&v)?;
            } else {
                let mut t = output::table(&["Space", "Policy", "Updated"], &[]);
                for (n, s) in &all {
                    t.add_row(vec![
                        Cell::new(n),
                        Cell::new(s.policy.describe()),
                        Cell::new(output::time(s.updated_ns)),
                    ]);
                }
                output::print_table(&t);
            }
        }
    }
    Ok(0)
}
