//! Announcements on the wire: a client's neighbour entry follows an address
//! to its new holder as soon as the new holder announces it.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use fechter_core::AddrSpec;
use fechter_linux::PlatformError;
use fechter_linux::announce::{Announcer, BurstConfig, burst_schedule};
use fechter_linux::lab::{Lab, block_on_in_ns, format_mac, run_in_ns};
use fechter_linux::netlink::{Applied, Netlink, Removed};

const LEASE: Duration = Duration::from_secs(30);

fn install(lab: &Lab, node: usize, vip: &AddrSpec) {
    let applied = block_on_in_ns(&lab.ns_name(node), || async {
        Netlink::connect()
            .await
            .unwrap()
            .install(vip, LEASE)
            .await
            .unwrap()
    })
    .unwrap();
    assert_eq!(applied, Applied::Created);
}

fn remove(lab: &Lab, node: usize, vip: &AddrSpec) {
    let removed = block_on_in_ns(&lab.ns_name(node), || async {
        Netlink::connect().await.unwrap().remove(vip).await.unwrap()
    })
    .unwrap();
    assert_eq!(removed, Removed::Deleted);
}

/// Node 0 holds `vip`, the client learns that, node 1 takes over and
/// calls `announce`. Returns how long it took the client's entry to move to
/// node 1's MAC, polling every 10 ms for at most `limit`.
fn takeover(
    lab: &Lab,
    vip: &AddrSpec,
    limit: Duration,
    announce: impl FnOnce(&Announcer) + Send,
) -> Option<Duration> {
    let client = lab.client_ns();
    let (mac0, mac1) = (lab.mac_of(0).unwrap(), lab.mac_of(1).unwrap());
    assert_ne!(mac0, mac1);

    install(lab, 0, vip);
    assert!(
        lab.ping_once(&client, vip.ip, Duration::from_secs(2))
            .unwrap(),
        "client cannot reach {} on node 0",
        vip.ip
    );
    assert_eq!(
        lab.neighbour_mac(&client, vip.ip).unwrap(),
        Some(mac0),
        "client learnt node 0's MAC"
    );

    // Failover: node 0 lets go, node 1 installs and announces.
    remove(lab, 0, vip);
    install(lab, 1, vip);
    run_in_ns(&lab.ns_name(1), || announce(&Announcer::new().unwrap())).unwrap();

    common::poll_until_blocking(limit, Duration::from_millis(10), || {
        lab.neighbour_mac(&client, vip.ip).unwrap() == Some(mac1)
    })
}

/// [`takeover`] that must move the entry within 1 s, and traffic with it.
fn takeover_moves(lab: &Lab, vip: &AddrSpec, announce: impl FnOnce(&Announcer) + Send) {
    let moved = takeover(lab, vip, Duration::from_secs(1), announce);
    let client = lab.client_ns();
    let now = lab.neighbour_mac(&client, vip.ip).unwrap();
    let mac1 = lab.mac_of(1).unwrap();
    let moved = moved.unwrap_or_else(|| {
        panic!(
            "client's entry for {} is {:?}, not node 1's {} after 1 s",
            vip.ip,
            now.map(format_mac),
            format_mac(mac1)
        )
    });
    eprintln!("client followed {} to node 1 after {moved:?}", vip.ip);
    // And traffic now reaches node 1.
    assert!(
        lab.ping_once(&client, vip.ip, Duration::from_secs(2))
            .unwrap()
    );
    assert_eq!(lab.neighbour_mac(&client, vip.ip).unwrap(), Some(mac1));
}

#[test]
fn without_announcement_the_client_keeps_the_old_mac() {
    // The control for the tests below: installing alone does not move the
    // client, so it is the announcement that does.
    let Some(lab) = common::lab("without_announcement_the_client_keeps_the_old_mac", 2) else {
        return;
    };
    for vip in ["eth0:198.18.0.53/24", "eth0:2001:db8::53/64"] {
        let vip = AddrSpec::parse(vip).unwrap();
        let moved = takeover(&lab, &vip, Duration::from_millis(300), |_| {});
        assert_eq!(moved, None, "{} moved without an announcement", vip.ip);
        assert_eq!(
            lab.neighbour_mac(&lab.client_ns(), vip.ip).unwrap(),
            Some(lab.mac_of(0).unwrap())
        );
        remove(&lab, 1, &vip);
    }
}

#[test]
fn gratuitous_arp_moves_the_clients_entry() {
    let Some(lab) = common::lab("gratuitous_arp_moves_the_clients_entry", 2) else {
        return;
    };
    let vip = AddrSpec::parse("eth0:198.18.0.50/24").unwrap();
    let IpAddr::V4(v4) = vip.ip else {
        unreachable!()
    };
    // Right after the ping (within ARP locktime): a plain reply would be ignored.
    takeover_moves(&lab, &vip, |a| a.send_garp("eth0", v4).unwrap());
}

#[test]
fn neighbour_advertisement_moves_the_clients_entry() {
    let Some(lab) = common::lab("neighbour_advertisement_moves_the_clients_entry", 2) else {
        return;
    };
    let vip = AddrSpec::parse("eth0:2001:db8::50/64").unwrap();
    let IpAddr::V6(v6) = vip.ip else {
        unreachable!()
    };
    takeover_moves(&lab, &vip, |a| a.send_na("eth0", v6).unwrap());
}

#[test]
fn burst_sends_on_schedule() {
    let Some(lab) = common::lab("burst_sends_on_schedule", 2) else {
        return;
    };
    let vip = AddrSpec::parse("eth0:198.18.0.51/24").unwrap();
    let schedule = burst_schedule(&BurstConfig {
        offsets: vec![Duration::from_millis(20), Duration::ZERO],
    });
    takeover_moves(&lab, &vip, |a| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let start = std::time::Instant::now();
        let sent = runtime
            .block_on(a.burst("eth0", vip.ip, &schedule))
            .unwrap();
        assert_eq!(sent, 2);
        assert!(start.elapsed() >= Duration::from_millis(20));
    });
}

#[test]
fn announcer_errors_name_the_interface() {
    let Some(lab) = common::lab("announcer_errors_name_the_interface", 1) else {
        return;
    };
    run_in_ns(&lab.ns_name(0), || {
        let a = Announcer::new().unwrap();
        let e = a
            .send_garp("nosuch0", "198.18.0.52".parse().unwrap())
            .unwrap_err();
        assert!(
            matches!(&e, PlatformError::InterfaceNotFound(i) if i == "nosuch0"),
            "{e:?}"
        );
        let e = a
            .send_na("lo", "2001:db8::52".parse().unwrap())
            .unwrap_err();
        assert!(
            matches!(&e, PlatformError::NotEthernet { iface, .. } if iface == "lo"),
            "{e:?}"
        );
        assert!(e.to_string().contains("Ethernet"), "{e}");
        let eth0 = a.interface("eth0").unwrap();
        assert_eq!(eth0.mac, lab.mac_of(0).unwrap());
        // A down interface is reported with the fix.
        lab.set_link(0, false).unwrap();
        let e = a
            .send_garp("eth0", "198.18.0.52".parse().unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("ip link set"), "{e}");
        lab.set_link(0, true).unwrap();
    })
    .unwrap();
}
