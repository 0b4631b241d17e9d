//! `fechter plan`: the allocation rules, offline.

use std::fmt::Write as _;

use fechter_core::{AddrSpec, Allocation, NodeId, allocate};
use serde::Serialize;

use crate::cli::PlanArgs;

#[derive(Debug, Serialize)]
pub struct PlanReport {
    pub nodes: Vec<NodeId>,
    pub allocation: Allocation,
    /// Present with `--fail`.
    pub after_failure: Option<AfterFailure>,
}

#[derive(Debug, Serialize)]
pub struct AfterFailure {
    pub failed: Vec<NodeId>,
    pub survivors: Vec<NodeId>,
    pub allocation: Allocation,
    pub moved: Vec<AddrSpec>,
}

/// Computes the report; errors name the bad input.
pub fn plan(args: &PlanArgs) -> Result<PlanReport, String> {
    for f in &args.fail {
        if !args.nodes.contains(f) {
            return Err(format!(
                "--fail {f}: {f} is not one of the nodes given with --node; add it with --node {f}"
            ));
        }
    }
    let mut seen = std::collections::BTreeMap::new();
    for spec in &args.addresses {
        if let Some(prev) = seen.insert(spec.ip, spec) {
            return Err(format!(
                "{spec} and {prev} are the same IP address; give each address once"
            ));
        }
    }
    let keyed: Vec<(usize, AddrSpec)> = args.addresses.iter().cloned().enumerate().collect();
    let allocation = allocate(&keyed, &args.nodes, &Allocation::default());
    let after_failure = (!args.fail.is_empty()).then(|| {
        let survivors: Vec<NodeId> = args
            .nodes
            .iter()
            .filter(|n| !args.fail.contains(n))
            .cloned()
            .collect();
        let after = allocate(&keyed, &survivors, &allocation);
        let moved = after.moved_from(&allocation).into_iter().cloned().collect();
        AfterFailure {
            failed: args.fail.clone(),
            survivors,
            allocation: after,
            moved,
        }
    });
    Ok(PlanReport {
        nodes: args.nodes.clone(),
        allocation,
        after_failure,
    })
}

/// The human form: the seed's `IFACE:IP assigned to NODE` lines, with standbys.
pub fn render(report: &PlanReport, order: &[AddrSpec]) -> String {
    let mut out = String::new();
    table(&mut out, &report.allocation, order, &[]);
    if let Some(f) = &report.after_failure {
        let failed: Vec<&str> = f.failed.iter().map(NodeId::as_str).collect();
        let _ = writeln!(
            out,
            "\nafter {} failed ({} of {} addresses moved):",
            failed.join(", "),
            f.moved.len(),
            order.len()
        );
        table(&mut out, &f.allocation, order, &f.moved);
    }
    out
}

fn table(out: &mut String, a: &Allocation, order: &[AddrSpec], moved: &[AddrSpec]) {
    let width = order.iter().map(|s| s.to_string().len()).max().unwrap_or(0);
    for spec in order {
        let name = spec.to_string();
        match a.placements.get(spec) {
            Some(p) => {
                let standby = p
                    .standby
                    .as_ref()
                    .map_or("none".to_string(), NodeId::to_string);
                let mark = if moved.contains(spec) {
                    "  (moved)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "{name:width$}  assigned to {}  standby {standby}{mark}",
                    p.holder
                );
            }
            None => {
                let _ = writeln!(out, "{name:width$}  not assigned (no eligible node)");
            }
        }
    }
}
