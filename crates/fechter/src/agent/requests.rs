//! What the operator asks the agent through the control socket: the
//! requests (add/remove an address, up/down, forget, events, reload) and
//! the status report.

use std::collections::BTreeMap;

use fechter_core::NodeId;
use fechter_core::claim::Standing;
use fechter_core::failover::Eligibility;
use fechter_core::replica::Admin;
use fechter_core::state::{AddError, AddressState, RemoveError};

use super::*;
use crate::control::{AddressStatus, MemberStatus, StatusReport};

/// Re-reads the configuration; applies what can change live (without
/// moving any address), refuses restart-only changes, keeps everything on
/// a bad file.
pub(super) fn reload(settings: &mut Settings, shell: &mut Shell) -> Response {
    let Some(reread) = settings.reload.0.clone() else {
        return Response::Error {
            error: "this agent was started without a configuration to re-read".into(),
        };
    };
    let outcome = reread().and_then(|new| {
        let live = settings.live_changes(&new)?;
        if live.contains(&"notify_*") {
            shell.obs.hooks = hooks::Hooks::start(new.notify.clone());
        }
        settings.renew_every = new.renew_every;
        settings.drain_timeout = new.drain_timeout;
        settings.announce_refresh = new.announce_refresh;
        settings.notify = new.notify;
        Ok(live)
    });
    match outcome {
        Ok(live) if live.is_empty() => {
            tracing::info!("reload: nothing changed");
            Response::Ok {
                body: serde_json::json!("configuration re-read: nothing changed"),
            }
        }
        Ok(live) => {
            tracing::info!(changed = ?live, "reload: applied");
            Response::Ok {
                body: serde_json::json!(format!(
                    "configuration re-read: applied {}",
                    live.join(", ")
                )),
            }
        }
        Err(error) => {
            tracing::warn!("reload refused, the running configuration stays: {error}");
            Response::Error {
                error: format!("{error} (the running configuration stays)"),
            }
        }
    }
}

impl Shell {
    pub(super) fn handle_request(&mut self, now: Now, req: Request) -> Response {
        let result = match req {
            Request::AddAddress { spec } => {
                self.node
                    .engine_mut()
                    .add_address(now, spec.clone())
                    .map_err(|e| match e {
                        AddError::AlreadyPresent { existing } if existing == spec => {
                            format!("{spec} is already present; nothing changed")
                        }
                        AddError::AlreadyPresent { existing } => format!(
                            "{} is already managed as {existing}; remove it first with `fechter remove-address {existing}`",
                            spec.ip
                        ),
                        AddError::StaleStamp { .. } => {
                            format!("{spec} was changed by another node at the same moment; try again")
                        }
                    })
            }
            Request::RemoveAddress { spec } => {
                let existing = self.node.engine().replica().addresses.get(&spec.ip).cloned();
                match existing {
                    Some(e) if e.state == AddressState::Assignable && e.spec != spec => Err(format!(
                        "{} is managed as {}; remove it by that name",
                        spec.ip, e.spec
                    )),
                    _ => self
                        .node
                        .engine_mut()
                        .remove_address(now, spec.ip)
                        .map_err(|e| match e {
                            RemoveError::UnknownAddress { .. } => format!(
                                "{spec} is not a managed address; `fechter status` lists them"
                            ),
                            RemoveError::StaleStamp { .. } => format!(
                                "{spec} was changed by another node at the same moment; try again"
                            ),
                        }),
                }
            }
            Request::Up => {
                self.node.engine_mut().update_own(now, |r| r.admin = Admin::Up);
                Ok(())
            }
            Request::Forget { node } => self
                .node
                .engine_mut()
                .forget(now, &node)
                .map_err(|e| format!("{e}; nothing changed")),
            Request::Down => {
                self.node.engine_mut().update_own(now, |r| r.admin = Admin::Down);
                Ok(())
            }
            Request::Reload => {
                return Response::Error {
                    error: "reload is handled by the agent loop".into(),
                };
            }
            Request::Status => {
                let body = serde_json::to_value(self.status()).expect("serializes");
                return Response::Ok { body };
            }
            Request::Events { after } => {
                let body = serde_json::to_value(self.obs.report(after)).expect("serializes");
                return Response::Ok { body };
            }
        };
        match result {
            Ok(()) => Response::Ok {
                body: serde_json::Value::Null,
            },
            Err(error) => Response::Error { error },
        }
    }

    pub(super) fn status(&self) -> StatusReport {
        let me = &self.node.engine().id().node;
        let el = self.node.engine().eligibility();
        StatusReport {
            node: me.to_string(),
            leader: self.node.engine().leader().map(ToString::to_string),
            members: self.member_statuses(el),
            addresses: self.address_statuses(),
            notes: self.status_notes(el),
            dropped: self.dropped_counts(),
        }
    }

    /// Every counted member (forgotten nodes, `fechter forget`, are not
    /// members any more), with why it cannot hold addresses.
    fn member_statuses(&self, el: &Eligibility) -> Vec<MemberStatus> {
        let r = self.node.engine().replica();
        let me = &self.node.engine().id().node;
        let live = self.node.engine().alive();
        let alive = |id: &NodeId| live.contains(id);
        r.counted_nodes()
            .map(|n| MemberStatus {
                id: n.id.to_string(),
                liveness: if alive(&n.id) { "alive" } else { "dead" }.into(),
                admin: match n.admin {
                    Admin::Up => "up",
                    Admin::Down => "down",
                }
                .into(),
                ineligible: el
                    .why_not
                    .get(&n.id)
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .chain(
                        (n.id == *me && self.node.engine().fenced())
                            .then(|| "no quorum".to_string()),
                    )
                    .chain(
                        (n.id == *me && self.node.engine().standing() == Standing::Minority).then(
                            || "no majority: serves only what nobody else answers for".to_string(),
                        ),
                    )
                    .chain(n.iface_trouble.iter().map(|(i, why)| format!("{i}: {why}")))
                    .collect(),
            })
            .collect()
    }

    /// Every assignable address with its holder and standby in the
    /// allocation this node acts on, and what the wire makes it wait for.
    fn address_statuses(&self) -> Vec<AddressStatus> {
        let alloc = self.node.engine().allocation();
        self.node
            .engine()
            .replica()
            .addresses
            .assignable()
            .into_iter()
            .map(|(_, spec)| {
                let p = alloc.placements.get(&spec);
                AddressStatus {
                    waiting: self.wire_waiting(&spec),
                    spec: spec.to_string(),
                    holder: p.map(|p| p.holder.to_string()),
                    standby: p.and_then(|p| p.standby.as_ref()).map(ToString::to_string),
                }
            })
            .collect()
    }

    /// Datagrams dropped, by reason (the seal's and the engine's); reasons
    /// never seen are left out.
    fn dropped_counts(&self) -> BTreeMap<String, u64> {
        metrics::drop_totals(&self.opener, self.node.engine())
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k.to_string(), n))
            .collect()
    }

    /// The cluster-wide conditions an operator should know of: fenced,
    /// minority, fail-static.
    fn status_notes(&self, el: &Eligibility) -> Vec<String> {
        let mut notes = Vec::new();
        if self.node.engine().fenced() {
            notes.push(
                "no quorum: this node sees no majority of the cluster and nothing on its segment, and holds nothing"
                    .to_string(),
            );
        }
        if self.node.engine().standing() == Standing::Minority {
            notes.push(
                "minority: this node sees no majority of the cluster but its segment is alive; it serves what no other machine answers for on the wire, and does not lead"
                    .to_string(),
            );
        }
        if let Some((addr, _)) = self
            .duplicate
            .filter(|(_, at)| mono().saturating_duration_since(*at) < Duration::from_secs(30))
        {
            notes.push(format!(
                "another machine ({addr}) runs with this node's id {}: give each machine its own node_id",
                self.node.me()
            ));
        }
        for spec in self.node.refused() {
            notes.push(format!(
                "{spec} is given to this node, which may not hold it (allowed_prefixes / allowed_interfaces): it is not served here"
            ));
        }
        if el.fail_static {
            notes.push(
                "fail-static: no up node is healthy, so addresses stay where they are".to_string(),
            );
        }
        notes
    }
}
