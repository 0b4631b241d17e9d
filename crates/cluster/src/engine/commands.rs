//! The operator's commands: add and remove addresses, change this node's
//! own record, forget a machine gone for good. On error nothing changes.

use super::*;

impl Engine {
    /// Adds an address (operator command). On error nothing changes.
    pub fn add_address(&mut self, now: Now, spec: fechter_core::AddrSpec) -> Result<(), AddError> {
        self.write_address(now, |list, stamp| list.add_entry(spec, stamp))
    }

    /// Marks an address do-not-assign (operator command). On error nothing changes.
    pub fn remove_address(&mut self, now: Now, ip: std::net::IpAddr) -> Result<(), RemoveError> {
        self.write_address(now, |list, stamp| list.remove_entry(ip, stamp))
    }

    /// A local write to the address list: stamped, disseminated, settled.
    pub(super) fn write_address<E>(
        &mut self,
        now: Now,
        write: impl FnOnce(
            &fechter_core::state::AddressList,
            Stamp,
        ) -> Result<fechter_core::state::AddressEntry, E>,
    ) -> Result<(), E> {
        let stamp = self.stamp(now);
        let entry = write(&self.shared.replica.addresses, stamp)?;
        self.broadcast(Item::Address(entry));
        self.after_input(now);
        Ok(())
    }

    /// Changes this node's own record (admin status, health, priority); the
    /// version is bumped and the record disseminated. Returns the new record.
    pub fn update_own(&mut self, now: Now, f: impl FnOnce(&mut NodeRecord)) -> NodeRecord {
        let mut rec = self.shared.replica.nodes[&self.cfg.me.node].clone();
        let before = rec.clone();
        f(&mut rec);
        if rec == before {
            return rec;
        }
        rec.id = self.cfg.me.node.clone();
        // Higher than the agent's own only after a refuted tombstone.
        rec.incarnation = before.incarnation.max(self.cfg.me.incarnation);
        rec.forgotten = false;
        rec.version = before.version + 1;
        self.broadcast(Item::Node(rec.clone()));
        self.after_input(now);
        rec
    }

    /// Forgets `node`, a machine gone for good (operator command, `fechter
    /// forget`): a [`NodeRecord::tombstone`] of its current incarnation is
    /// applied and disseminated, after which no node counts it toward the
    /// majority, and it is never eligible and never leads. A node that
    /// starts again (a higher incarnation) replaces the tombstone and counts
    /// again; a running node that did not hear of it in time refutes it the
    /// same way.
    ///
    /// Refused, changing nothing, when `node` is not a node this one knows
    /// ([`ForgetError::Unknown`]), is this node ([`ForgetError::Myself`]),
    /// or is alive here: a SWIM member, or heard within the heartbeat
    /// timeout ([`ForgetError::Alive`]). Forgetting a node already
    /// forgotten changes nothing and succeeds.
    ///
    /// Forgetting lowers the majority: a node that does not hear the others
    /// (a minority) and forgets them becomes quorate on its own. The wire
    /// still keeps it from installing what another machine answers for.
    pub fn forget(&mut self, now: Now, node: &NodeId) -> Result<(), ForgetError> {
        if *node == self.cfg.me.node {
            return Err(ForgetError::Myself(node.clone()));
        }
        let Some(rec) = self.replica().nodes.get(node).cloned() else {
            return Err(ForgetError::Unknown(node.clone()));
        };
        if self.live_peers(now).contains_key(node) {
            return Err(ForgetError::Alive(node.clone()));
        }
        if rec.forgotten {
            return Ok(());
        }
        self.broadcast(Item::Node(NodeRecord::tombstone(
            node.clone(),
            rec.incarnation,
        )));
        self.after_input(now);
        Ok(())
    }
}
