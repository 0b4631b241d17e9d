//! fechter as a benchmark subject: the end-to-end tests' namespace cluster
//! (three agents of this crate's binary, or as many as asked), checking
//! the gateway (or not: [`Fechter::start_custom`]).

use std::path::PathBuf;
use std::time::Duration;

use fechter_linux::lab::Lab;

use crate::e2e_support::{Cluster, ip_of, poll};
use crate::subject::{Fault, GATEWAY, Subject, VIP};

/// The address under test as fechter names it.
pub fn spec() -> String {
    format!("eth0:{VIP}/24")
}

/// How long a `two-killed` trial watches (fechter and keepalived alike):
/// the killed holder's kernel lease (2 s from its last renewal; the kernel
/// checks lifetimes on whole seconds) must end, then the survivor takes
/// over (about 3 s after the kill), with a margin.
pub const TWO_KILLED_WINDOW: Duration = Duration::from_millis(4000);

pub struct Fechter {
    cluster: Cluster,
    label: String,
}

/// The client's namespace also plays the gateway.
pub fn client_is_gateway(lab: &Lab) {
    lab.ip(
        &lab.client_ns(),
        &["addr", "add", &format!("{GATEWAY}/24"), "dev", "eth0"],
    )
    .expect("gateway address");
}

impl Fechter {
    /// Three agents in a fresh lab serving [`VIP`], each checking the
    /// gateway; `config` is passed to every agent (`--config`), `label`
    /// names the subject in the table.
    pub fn start(label: &str, config: Option<PathBuf>) -> Result<Fechter, String> {
        Fechter::start_sized(label, 3, config)
    }

    /// [`Fechter::start`] on a lab of `nodes` machines.
    pub fn start_sized(
        label: &str,
        nodes: usize,
        config: Option<PathBuf>,
    ) -> Result<Fechter, String> {
        Fechter::start_custom(label, nodes, config, true)
    }

    /// [`Fechter::start_sized`], the agents checking the gateway
    /// (`--gateway`) only if `gateway`. The client has the gateway's address
    /// either way (the lab is the same).
    pub fn start_custom(
        label: &str,
        nodes: usize,
        config: Option<PathBuf>,
        gateway: bool,
    ) -> Result<Fechter, String> {
        let args = agent_args_with(config, gateway);
        let cluster = Cluster::start_sized("bench", nodes, args, client_is_gateway)
            .ok_or("the namespace lab cannot run here")?;
        let spec = spec();
        cluster.cli(0, &["add-address", &spec])?;
        cluster.up_all();
        let all: Vec<usize> = (0..nodes).collect();
        cluster.wait_converged(&spec, &all, Duration::from_secs(20));
        Ok(Fechter {
            cluster,
            label: label.to_owned(),
        })
    }

    pub fn cluster_mut(&mut self) -> &mut Cluster {
        &mut self.cluster
    }
}

/// Every agent checks the gateway; the fast profile adds its file.
pub fn agent_args(config: Option<PathBuf>) -> impl Fn(usize) -> Vec<String> {
    agent_args_with(config, true)
}

/// [`agent_args`], with `--gateway` only if `gateway`.
pub fn agent_args_with(config: Option<PathBuf>, gateway: bool) -> impl Fn(usize) -> Vec<String> {
    move |_| {
        let mut a = Vec::new();
        if gateway {
            a.push("--gateway".to_string());
            a.push(GATEWAY.to_string());
        }
        if let Some(c) = &config {
            a.push("--config".into());
            a.push(c.to_string_lossy().into_owned());
        }
        a
    }
}

impl Subject for Fechter {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn lab(&self) -> &Lab {
        &self.cluster.lab
    }

    fn unsupported(&self, _fault: Fault) -> Option<&'static str> {
        None
    }

    fn settle(&mut self) -> Result<usize, String> {
        let c = &self.cluster;
        let all: Vec<usize> = (0..c.lab.nodes()).collect();
        c.wait_members_alive(&all, Duration::from_secs(20));
        c.wait_all_eligible(Duration::from_secs(20));
        let spec = spec();
        let (holders, _) = c.wait_stable(
            &[spec.as_str()],
            &all,
            Duration::from_millis(500),
            Duration::from_secs(20),
        );
        let ip = ip_of(&spec);
        let one = poll(Duration::from_secs(5), Duration::from_millis(20), || {
            let on = c.kernel_holders(ip);
            (on == [holders[0]]).then_some(())
        });
        one.map(|()| holders[0]).ok_or_else(|| {
            format!(
                "{VIP} is on {:?} in the kernels, the agents say n{}",
                c.kernel_holders(ip),
                holders[0]
            )
        })
    }

    fn inject(&mut self, fault: Fault, node: usize) -> Result<(), String> {
        let victims = fault.victims(node, self.cluster.lab.nodes());
        let c = &mut self.cluster;
        let lab_err = |e: fechter_linux::lab::LabError| e.to_string();
        match fault {
            Fault::MachineDeath => {
                c.stop(node);
                c.lab.set_link(node, false).map_err(lab_err)?;
            }
            Fault::Sigkill => c.kill(node),
            Fault::Sigterm => c.term(node),
            Fault::Down => {
                c.cli(node, &["down"])?;
            }
            Fault::CarrierLoss => c.lab.set_carrier(node, false).map_err(lab_err)?,
            Fault::GatewayLoss => {
                let route = format!("{GATEWAY}/32");
                c.lab
                    .ip(&c.ns(node), &["route", "add", "blackhole", &route])
                    .map_err(lab_err)?;
            }
            Fault::Partition => c.lab.detach(node).map_err(lab_err)?,
            Fault::TwoKilled => {
                for &v in &victims {
                    c.kill(v);
                }
            }
            Fault::TwoDead => {
                // Both agents frozen first, then both links down: the two
                // machines go within a few milliseconds of each other.
                for &v in &victims {
                    c.stop(v);
                }
                for &v in &victims {
                    c.lab.set_link(v, false).map_err(lab_err)?;
                }
            }
        }
        Ok(())
    }

    fn repair(&mut self, fault: Fault, node: usize) -> Result<(), String> {
        let victims = fault.victims(node, self.cluster.lab.nodes());
        let c = &mut self.cluster;
        let lab_err = |e: fechter_linux::lab::LabError| e.to_string();
        match fault {
            Fault::MachineDeath => {
                // The machine reboots: the frozen agent is gone, the link
                // comes back, the agent starts again.
                c.kill(node);
                c.lab.set_link(node, true).map_err(lab_err)?;
                c.restart(node);
            }
            Fault::Sigkill => c.restart(node),
            Fault::Sigterm => {
                let exited = c.agent(node).wait_exit(Duration::from_secs(10));
                if exited.is_none() {
                    return Err(format!("n{node} did not exit within 10 s of SIGTERM"));
                }
                c.restart(node);
            }
            Fault::Down => {
                c.cli(node, &["up"])?;
            }
            Fault::CarrierLoss => c.lab.set_carrier(node, true).map_err(lab_err)?,
            Fault::GatewayLoss => {
                let route = format!("{GATEWAY}/32");
                c.lab
                    .ip(&c.ns(node), &["route", "del", "blackhole", &route])
                    .map_err(lab_err)?;
            }
            Fault::Partition => c.lab.reattach(node).map_err(lab_err)?,
            Fault::TwoKilled => {
                for &v in &victims {
                    c.restart(v);
                }
            }
            Fault::TwoDead => {
                // As for machine death, both machines reboot.
                for &v in &victims {
                    c.kill(v);
                    c.lab.set_link(v, true).map_err(lab_err)?;
                }
                for &v in &victims {
                    c.restart(v);
                }
            }
        }
        Ok(())
    }

    fn window(&self, fault: Fault) -> Duration {
        match fault {
            // The killed agent's address lives until its kernel lease ends.
            Fault::Sigkill => Duration::from_millis(2800),
            // The same, then the survivor (a minority that sees frames on
            // its segment) probes the address free and installs it.
            Fault::TwoKilled => TWO_KILLED_WINDOW,
            // The survivor is a minority: it serves once it has seen signs
            // of life and probed the address free.
            Fault::TwoDead => Duration::from_millis(2000),
            // Three failed checks 250 ms apart.
            Fault::GatewayLoss => Duration::from_millis(2000),
            _ => Duration::from_millis(1200),
        }
    }

    fn pids(&self, node: usize) -> Vec<i32> {
        self.cluster.agent_pid(node).into_iter().collect()
    }
}
