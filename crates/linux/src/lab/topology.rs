//! Building a lab (namespaces, the bridge, one veth per host) and the link
//! faults the tests inject (link down, carrier lost, port detached).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::run::{ip, netns_list, run_in_ns};
use super::{Lab, LabError, MAX_NODES};

/// A prefix no existing namespace uses: `fch` + 5 hex digits.
pub(super) fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let existing = netns_list().unwrap_or_default();
    let mut prefix = String::new();
    for _ in 0..256 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        // FNV-1a over pid, time and a counter.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in std::process::id()
            .to_le_bytes()
            .into_iter()
            .chain(nanos.to_le_bytes())
            .chain(count.to_le_bytes())
        {
            h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        prefix = format!("fch{:05x}", (h ^ (h >> 32)) & 0xf_ffff);
        if !existing.iter().any(|n| n.starts_with(&prefix)) {
            break;
        }
    }
    prefix
}

impl Lab {
    /// Builds a lab with `nodes` nodes (at most [`MAX_NODES`]) and a client.
    /// On error, whatever was built is removed again.
    pub fn new(nodes: usize) -> Result<Lab, LabError> {
        if nodes > MAX_NODES {
            return Err(LabError::TooManyNodes { nodes });
        }
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return Err(LabError::NotRoot { euid });
        }
        let mut lab = Lab {
            prefix: unique_prefix(),
            nodes,
            namespaces: Vec::new(),
        };
        // Any `?` below drops `lab`, which deletes what exists so far.
        let sw = lab.switch_ns();
        lab.add_ns(&sw)?;
        // The switch only bridges: its ports get no IPv6 stack of their
        // own, whose link-local DAD and router solicitations would reach
        // a node even through a detached port (a false sign of life).
        run_in_ns(&sw, || {
            for conf in ["all", "default"] {
                let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                if let Err(e) = std::fs::write(&path, "1") {
                    eprintln!("lab: cannot write {path}: {e}");
                }
            }
        })?;
        let bridge = lab.bridge();
        ip(&[
            "-n",
            &sw,
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        ip(&["-n", &sw, "link", "set", &bridge, "up"])?;
        for node in 0..nodes {
            let (ns, port) = (lab.ns_name(node), lab.port(node));
            let last = 10 + node;
            lab.add_host(
                &ns,
                &port,
                &format!("02:fc:00:00:00:{last:02x}"),
                &format!("198.18.0.{last}/24"),
                &format!("2001:db8::{last}/64"),
            )?;
        }
        let (client, port) = (lab.client_ns(), lab.client_port());
        lab.add_host(
            &client,
            &port,
            "02:fc:00:00:01:00",
            "198.18.0.100/24",
            "2001:db8::100/64",
        )?;
        Ok(lab)
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), LabError> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// One host namespace with `eth0` plugged into the bridge as `port`.
    fn add_host(
        &mut self,
        ns: &str,
        port: &str,
        mac: &str,
        v4: &str,
        v6: &str,
    ) -> Result<(), LabError> {
        let (sw, bridge) = (self.switch_ns(), self.bridge());
        self.add_ns(ns)?;
        // Created inside `ns`, the peer placed straight into the switch.
        ip(&[
            "-n", ns, "link", "add", "eth0", "address", mac, "type", "veth", "peer", "name", port,
            "netns", &sw,
        ])?;
        ip(&["-n", &sw, "link", "set", port, "master", &bridge, "up"])?;
        // Keep the static IPv6 addresses when a test sets the link down.
        let knob = "/proc/sys/net/ipv6/conf/eth0/keep_addr_on_down";
        run_in_ns(ns, || std::fs::write(knob, "1"))?.map_err(|source| LabError::Spawn {
            cmd: format!("echo 1 > {knob} (in {ns})"),
            source,
        })?;
        ip(&["-n", ns, "addr", "add", v4, "dev", "eth0"])?;
        ip(&["-n", ns, "addr", "add", v6, "dev", "eth0", "nodad"])?;
        ip(&["-n", ns, "link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// Sets node `node`'s own `eth0` administratively up or down: the node
    /// sees its link go down (`up: false`).
    pub fn set_link(&self, node: usize, up: bool) -> Result<(), LabError> {
        self.check_node(node)?;
        let state = if up { "up" } else { "down" };
        self.ip(&self.ns_name(node), &["link", "set", "eth0", state])
            .map(drop)
    }

    /// Sets the switch side of node `node`'s cable up or down: the node's
    /// `eth0` stays up but loses its carrier (`carrier: false`).
    pub fn set_carrier(&self, node: usize, up: bool) -> Result<(), LabError> {
        self.check_node(node)?;
        let state = if up { "up" } else { "down" };
        self.ip(&self.switch_ns(), &["link", "set", &self.port(node), state])
            .map(drop)
    }

    /// Takes node `node`'s port off the bridge: a partition in which the
    /// node's link and carrier stay up.
    pub fn detach(&self, node: usize) -> Result<(), LabError> {
        self.check_node(node)?;
        self.ip(
            &self.switch_ns(),
            &["link", "set", &self.port(node), "nomaster"],
        )
        .map(drop)
    }

    /// Puts node `node`'s port back on the bridge.
    pub fn reattach(&self, node: usize) -> Result<(), LabError> {
        self.check_node(node)?;
        let (port, bridge) = (self.port(node), self.bridge());
        self.ip(
            &self.switch_ns(),
            &["link", "set", &port, "master", &bridge],
        )
        .map(drop)
    }
}
