//! Unit tests of [`super`]: leases, capabilities and error mapping.

use super::*;

#[test]
fn lease_is_rounded_up_to_whole_seconds() {
    assert_eq!(lease_secs(Duration::from_secs(1)).unwrap(), 1);
    assert_eq!(lease_secs(Duration::from_millis(1)).unwrap(), 1);
    assert_eq!(lease_secs(Duration::from_millis(2500)).unwrap(), 3);
    assert_eq!(
        lease_secs(Duration::from_secs(u64::from(u32::MAX) - 1)).unwrap(),
        u32::MAX - 1
    );
    for bad in [Duration::ZERO, Duration::from_secs(u64::from(u32::MAX))] {
        let e = lease_secs(bad).unwrap_err();
        assert!(matches!(e, PlatformError::InvalidLease { .. }));
        assert!(e.to_string().contains("at least 1 s"), "{e}");
    }
}

#[test]
fn capabilities_from_status() {
    let status = |eff: &str| format!("Name:\tfechter\nCapInh:\t0\nCapEff:\t{eff}\nCapBnd:\t0\n");
    // Root: everything.
    check_capabilities(&status("000001ffffffffff")).unwrap();
    // Exactly NET_ADMIN (bit 12) and NET_RAW (bit 13).
    check_capabilities(&status("0000000000003000")).unwrap();
    // Only NET_RAW.
    let e = check_capabilities(&status("0000000000002000")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");
    assert!(
        msg.contains("setcap") && msg.contains("AmbientCapabilities"),
        "{msg}"
    );
    // Only NET_ADMIN.
    let e = check_capabilities(&status("0000000000001000")).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("CAP_NET_RAW") && msg.contains("root"), "{msg}");
    // Garbage.
    assert!(matches!(
        check_capabilities("Name:\tx\n"),
        Err(PlatformError::ProcStatus { .. })
    ));
    assert!(matches!(
        check_capabilities(&status("zz")),
        Err(PlatformError::ProcStatus { .. })
    ));
}

#[test]
fn check_privileges_reads_proc() {
    // Whatever we are, reading our own status must work and agree with euid 0.
    let r = check_privileges();
    if unsafe { libc::geteuid() } == 0 {
        r.unwrap();
    } else if let Err(e) = r {
        assert!(matches!(e, PlatformError::MissingCapability { .. }), "{e}");
    }
}

#[test]
fn errors_name_problem_and_fix() {
    let e = PlatformError::InterfaceNotFound("eth9".into());
    assert!(e.to_string().contains("\"eth9\"") && e.to_string().contains("ip link"));
    let e = map_err(
        rtnetlink::Error::RequestFailed,
        "adding x".into(),
        "eth0",
        false,
    );
    assert!(matches!(e, PlatformError::NetlinkProtocol { .. }));
}
