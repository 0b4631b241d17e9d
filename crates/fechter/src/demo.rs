//! `fechter demo`: a live cluster in network namespaces on this machine.

use crate::cli::DemoArgs;

/// Runs the demo. Errors say exactly why it cannot run here.
pub fn run(_args: &DemoArgs) -> Result<(), String> {
    fechter_linux::lab_available()?;
    Err("the demo is being built".into())
}
