//! The namespace lab itself: topology, failure knobs, and cleanup.

mod common;

use std::net::IpAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use fechter_linux::lab::{self, Lab};

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn build_and_drop_leaves_netns_list_unchanged() {
    if !lab::require_lab("build_and_drop_leaves_netns_list_unchanged") {
        return;
    }
    let before = lab::netns_list().unwrap();
    let lab = Lab::new(3).unwrap();
    let prefix = lab.prefix().to_owned();
    let mine: Vec<String> = lab::netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    let mut expected = vec![
        lab.switch_ns(),
        lab.ns_name(0),
        lab.ns_name(1),
        lab.ns_name(2),
        lab.client_ns(),
    ];
    expected.sort();
    let mut mine_sorted = mine.clone();
    mine_sorted.sort();
    assert_eq!(mine_sorted, expected);
    drop(lab);
    common::assert_netns_restored(&prefix, &before);
}

#[test]
fn panic_with_a_lab_still_cleans_up() {
    if !lab::require_lab("panic_with_a_lab_still_cleans_up") {
        return;
    }
    let before = lab::netns_list().unwrap();
    let mut prefix = String::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let lab = Lab::new(2).unwrap();
        prefix = lab.prefix().to_owned();
        assert!(
            lab::netns_list()
                .unwrap()
                .iter()
                .any(|n| n.starts_with(&prefix))
        );
        panic!("deliberate panic inside a test holding lab {prefix}");
    }));
    assert!(result.is_err(), "the closure must have panicked");
    assert!(!prefix.is_empty());
    common::assert_netns_restored(&prefix, &before);
}

#[test]
fn topology_and_failure_knobs() {
    let Some(lab) = common::lab("topology_and_failure_knobs", 2) else {
        return;
    };
    let client = lab.client_ns();
    let v4 = |node| IpAddr::V4(lab.node_ipv4(node));
    let v6 = |node| IpAddr::V6(lab.node_ipv6(node));

    // Names, addresses, MACs.
    assert!(lab.ns_name(1).ends_with("-n1") && lab.ns_name(1).len() <= 15);
    assert_eq!(lab.node_ipv4(1).to_string(), "198.18.0.11");
    assert_eq!(lab.node_ipv6(1).to_string(), "2001:db8::11");
    assert_eq!(lab.mac_of(0).unwrap(), [0x02, 0xfc, 0, 0, 0, 0x0a]);
    assert_eq!(lab.client_mac().unwrap(), [0x02, 0xfc, 0, 0, 1, 0]);
    let addrs = lab
        .ip(&lab.ns_name(0), &["-o", "addr", "show", "dev", "eth0"])
        .unwrap();
    assert!(addrs.contains("198.18.0.10/24"), "{addrs}");
    assert!(addrs.contains("2001:db8::10/64"), "{addrs}");
    let lo = lab
        .ip(&lab.ns_name(0), &["-o", "link", "show", "lo"])
        .unwrap();
    assert!(lo.contains("UP"), "lo is up: {lo}");
    assert!(lab.mac_of(2).is_err(), "node 2 does not exist");

    // Everyone reaches everyone, over IPv4 and IPv6.
    for node in 0..2 {
        assert!(
            lab.ping_once(&client, v4(node), SECOND).unwrap(),
            "client -> n{node} v4"
        );
        assert!(
            lab.ping_once(&client, v6(node), SECOND).unwrap(),
            "client -> n{node} v6"
        );
    }
    assert!(lab.ping_once(&lab.ns_name(0), v4(1), SECOND).unwrap());
    assert_eq!(
        lab.neighbour_mac(&client, v4(0)).unwrap(),
        Some(lab.mac_of(0).unwrap())
    );
    assert_eq!(
        lab.neighbour_mac(&client, "198.18.0.99".parse().unwrap())
            .unwrap(),
        None
    );

    // Carrier loss: the node's eth0 stays up but loses its carrier.
    lab.set_carrier(0, false).unwrap();
    let link = lab
        .ip(&lab.ns_name(0), &["-o", "link", "show", "eth0"])
        .unwrap();
    assert!(
        link.contains("NO-CARRIER") && link.contains(",UP"),
        "{link}"
    );
    assert!(!lab.ping_once(&client, v4(0), SECOND).unwrap());
    lab.set_carrier(0, true).unwrap();
    assert!(lab.ping_once(&client, v4(0), SECOND).unwrap());

    // Link down inside the node; the static addresses survive it.
    lab.set_link(0, false).unwrap();
    let link = lab
        .ip(&lab.ns_name(0), &["-o", "link", "show", "eth0"])
        .unwrap();
    assert!(link.contains("state DOWN"), "{link}");
    lab.set_link(0, true).unwrap();
    assert!(lab.ping_once(&client, v4(0), SECOND).unwrap());
    assert!(lab.ping_once(&client, v6(0), SECOND).unwrap());

    // Partition with carrier up: the node sees nothing wrong with its link.
    lab.detach(1).unwrap();
    let link = lab
        .ip(&lab.ns_name(1), &["-o", "link", "show", "eth0"])
        .unwrap();
    assert!(
        link.contains("LOWER_UP") && link.contains("state UP"),
        "{link}"
    );
    assert!(!lab.ping_once(&client, v4(1), SECOND).unwrap());
    lab.reattach(1).unwrap();
    assert!(lab.ping_once(&client, v4(1), SECOND).unwrap());

    // exec runs inside the namespace.
    let out = lab
        .exec(&lab.ns_name(1), &["ip", "-o", "-4", "addr", "show", "eth0"])
        .unwrap();
    assert!(out.contains("198.18.0.11/24"), "{out}");
}
