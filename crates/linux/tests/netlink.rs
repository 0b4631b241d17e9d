//! Addresses through rtnetlink inside a lab node: leases, renewals,
//! idempotent removal, IPv6 without DAD, and the link/address watch.

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use fechter_core::AddrSpec;
use fechter_linux::PlatformError;
use fechter_linux::lab::block_on_in_ns;
use fechter_linux::netlink::{self, Applied, NetEvent, Netlink, Removed};
use tokio::sync::mpsc;

fn spec(s: &str) -> AddrSpec {
    AddrSpec::parse(s).unwrap()
}

#[test]
fn lease_expires_without_renewal() {
    let Some(lab) = common::lab("lease_expires_without_renewal", 1) else {
        return;
    };
    block_on_in_ns(&lab.ns_name(0), || async {
        let nl = Netlink::connect().await.unwrap();
        let vip = spec("eth0:198.18.0.50/24");
        assert_eq!(
            nl.install(&vip, Duration::from_secs(1)).await.unwrap(),
            Applied::Created
        );
        let installed = Instant::now();

        let seen = nl.find(&vip).await.unwrap().expect("address installed");
        assert_eq!(seen.label.as_deref(), Some("eth0:fch"));
        assert!(!seen.is_permanent(), "{seen:?}");
        for lifetime in [seen.valid_lifetime, seen.preferred_lifetime] {
            let lifetime = lifetime.expect("finite lifetime");
            assert!(lifetime <= Duration::from_secs(1), "{seen:?}");
        }
        // The lab's own address is permanent, for contrast.
        let own = nl
            .find(&spec("eth0:198.18.0.10/24"))
            .await
            .unwrap()
            .unwrap();
        assert!(
            own.is_permanent() && own.valid_lifetime.is_none(),
            "{own:?}"
        );

        // Not renewed: the kernel removes it by itself.
        let gone = common::poll_until(
            Duration::from_secs(4),
            Duration::from_millis(50),
            || async { nl.find(&vip).await.unwrap().is_none() },
        )
        .await;
        assert!(gone.is_some(), "a 1 s lease was still there after 4 s");
        eprintln!("IPv4: 1 s lease expired after {:?}", installed.elapsed());

        // The same for IPv6.
        let vip6 = spec("eth0:2001:db8::51/64");
        nl.install(&vip6, Duration::from_secs(1)).await.unwrap();
        let installed = Instant::now();
        let seen = nl.find(&vip6).await.unwrap().expect("installed");
        assert!(
            seen.valid_lifetime
                .is_some_and(|d| d <= Duration::from_secs(1))
        );
        let gone = common::poll_until(
            Duration::from_secs(4),
            Duration::from_millis(50),
            || async { nl.find(&vip6).await.unwrap().is_none() },
        )
        .await;
        assert!(gone.is_some(), "a 1 s IPv6 lease was still there after 4 s");
        eprintln!("IPv6: 1 s lease expired after {:?}", installed.elapsed());
    })
    .unwrap();
}

#[test]
fn renewal_keeps_the_address_and_remove_is_idempotent() {
    let Some(lab) = common::lab("renewal_keeps_the_address_and_remove_is_idempotent", 1) else {
        return;
    };
    let ns = lab.ns_name(0);
    block_on_in_ns(&ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let vip = spec("eth0:198.18.0.51/24");
        let lease = Duration::from_secs(1);
        assert_eq!(nl.install(&vip, lease).await.unwrap(), Applied::Created);
        let installed = Instant::now();
        // Renew every 250 ms for 2.5 s: well past the original 1 s lease.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            assert_eq!(nl.renew(&vip, lease).await.unwrap(), Applied::Refreshed);
        }
        assert!(installed.elapsed() > Duration::from_secs(2));
        let seen = nl.find(&vip).await.unwrap().expect("renewed address stays");
        assert_eq!(seen.label.as_deref(), Some("eth0:fch"));

        // Installing again is not an error either.
        assert_eq!(nl.install(&vip, lease).await.unwrap(), Applied::Refreshed);

        assert_eq!(nl.remove(&vip).await.unwrap(), Removed::Deleted);
        assert!(nl.find(&vip).await.unwrap().is_none());
        assert_eq!(nl.remove(&vip).await.unwrap(), Removed::WasAbsent);

        // Renewing a missing address creates it again, and says so.
        assert_eq!(nl.renew(&vip, lease).await.unwrap(), Applied::Created);
        assert!(nl.find(&vip).await.unwrap().is_some());
        assert_eq!(nl.remove(&vip).await.unwrap(), Removed::Deleted);

        // Many at once (all requests in flight together): installs report
        // each address, renewals keep every one and recreate a missing one.
        let many: Vec<AddrSpec> = (60..70)
            .map(|k| spec(&format!("eth0:198.18.0.{k}/32")))
            .collect();
        let applied = nl.install_many(&many, lease).await;
        assert!(
            applied.iter().all(|r| matches!(r, Ok(Applied::Created))),
            "{applied:?}"
        );
        assert_eq!(nl.remove(&many[3]).await.unwrap(), Removed::Deleted);
        let started = Instant::now();
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let renewed = nl.renew_many(&many, lease).await;
            assert!(renewed.iter().all(Result::is_ok), "{renewed:?}");
        }
        assert!(
            started.elapsed() > Duration::from_millis(1500),
            "past the 1 s lease"
        );
        for s in &many {
            assert!(nl.find(s).await.unwrap().is_some(), "{s} was not kept");
            assert_eq!(nl.remove(s).await.unwrap(), Removed::Deleted);
        }
        let bad = spec("nosuch0:198.18.0.71/32");
        let renewed = nl.renew_many(&[many[0].clone(), bad], lease).await;
        assert!(renewed[0].is_ok(), "{renewed:?}");
        assert!(
            matches!(renewed[1], Err(PlatformError::InterfaceNotFound(_))),
            "{renewed:?}"
        );
        assert_eq!(nl.remove(&many[0]).await.unwrap(), Removed::Deleted);

        // More than one batch of renewals (each batch is one datagram to the
        // kernel): every address is there afterwards.
        let lots: Vec<AddrSpec> = (0..2 * netlink::RENEW_BATCH + 10)
            .map(|k| spec(&format!("eth0:198.18.2.{}/32", k + 1)))
            .collect();
        let renewed = nl.renew_many(&lots, lease).await;
        assert!(renewed.iter().all(Result::is_ok), "{renewed:?}");
        let present = nl.list().await.unwrap();
        for s in &lots {
            assert!(present.iter().any(|a| a.matches(s)), "{s} missing");
            assert_eq!(nl.remove(s).await.unwrap(), Removed::Deleted);
        }

        // A kernel error for one request of a batch fails that address
        // only, mapped like a single request's; the others of the same
        // batch are renewed (the acknowledgements stay in step).
        lab.ip(
            &ns,
            &[
                "link", "add", "v6off", "type", "veth", "peer", "name", "v6off-b",
            ],
        )
        .unwrap();
        lab.ip(&ns, &["link", "set", "v6off", "up"]).unwrap();
        // (This thread is in the namespace: its /proc/sys/net is the lab's.)
        std::fs::write("/proc/sys/net/ipv6/conf/v6off/disable_ipv6", "1").unwrap();
        let mixed = [
            spec("eth0:198.18.3.1/32"),
            spec("v6off:2001:db8::61/64"),
            spec("eth0:198.18.3.2/32"),
        ];
        let renewed = nl.renew_many(&mixed, lease).await;
        assert!(renewed[0].is_ok() && renewed[2].is_ok(), "{renewed:?}");
        assert!(
            matches!(&renewed[1], Err(PlatformError::Ipv6Disabled { iface }) if iface == "v6off"),
            "{renewed:?}"
        );
        for s in [&mixed[0], &mixed[2]] {
            assert_eq!(nl.remove(s).await.unwrap(), Removed::Deleted, "{s}");
        }
        assert!(nl.find(&mixed[1]).await.unwrap().is_none());

        // Same address, other prefix: not ours, so nothing to remove.
        nl.install(&vip, lease).await.unwrap();
        assert_eq!(
            nl.remove(&spec("eth0:198.18.0.51/32")).await.unwrap(),
            Removed::WasAbsent
        );
        assert_eq!(nl.remove(&vip).await.unwrap(), Removed::Deleted);
    })
    .unwrap();
}

#[test]
fn ipv6_with_nodad_is_usable_at_once() {
    let Some(lab) = common::lab("ipv6_with_nodad_is_usable_at_once", 1) else {
        return;
    };
    let ns = lab.ns_name(0);
    block_on_in_ns(&ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let vip = spec("eth0:2001:db8::50/64");
        assert_eq!(
            nl.install(&vip, Duration::from_secs(30)).await.unwrap(),
            Applied::Created
        );
        let seen = nl.find(&vip).await.unwrap().expect("installed");
        assert!(seen.is_nodad(), "{seen:?}");
        assert!(!seen.is_tentative() && !seen.is_dad_failed(), "{seen:?}");
        assert_eq!(seen.label, None);
        assert!(
            seen.valid_lifetime
                .is_some_and(|d| d <= Duration::from_secs(30))
        );
        let shown = lab
            .ip(&ns, &["-6", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        let line = shown
            .lines()
            .find(|l| l.contains("2001:db8::50/64"))
            .expect(&shown);
        assert!(
            line.contains("nodad") && !line.contains("tentative"),
            "{line}"
        );
        // Usable: the client reaches it right away.
        assert!(
            lab.ping_once(&lab.client_ns(), vip.ip, Duration::from_secs(1))
                .unwrap()
        );
        assert_eq!(
            nl.renew(&vip, Duration::from_secs(30)).await.unwrap(),
            Applied::Refreshed
        );
        assert_eq!(nl.remove(&vip).await.unwrap(), Removed::Deleted);
        assert_eq!(nl.remove(&vip).await.unwrap(), Removed::WasAbsent);
    })
    .unwrap();
}

#[test]
fn missing_interface_is_named() {
    let Some(lab) = common::lab("missing_interface_is_named", 1) else {
        return;
    };
    block_on_in_ns(&lab.ns_name(0), || async {
        let nl = Netlink::connect().await.unwrap();
        let vip = spec("nosuch0:198.18.0.52/24");
        let e = nl.install(&vip, Duration::from_secs(5)).await.unwrap_err();
        assert!(
            matches!(&e, PlatformError::InterfaceNotFound(i) if i == "nosuch0"),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"nosuch0\""), "{e}");
        let e = nl.renew(&vip, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.is_interface_not_found());
        assert_eq!(nl.remove(&vip).await.unwrap(), Removed::WasAbsent);
        let e = nl.link("nosuch0").await.unwrap_err();
        assert!(e.is_interface_not_found());
        let e = nl
            .install(&spec("eth0:198.18.0.52/24"), Duration::ZERO)
            .await
            .unwrap_err();
        assert!(matches!(e, PlatformError::InvalidLease { .. }), "{e:?}");

        let eth0 = nl.link("eth0").await.unwrap();
        assert!(eth0.up && eth0.carrier);
        assert_eq!(eth0.mac, Some([0x02, 0xfc, 0, 0, 0, 0x0a]));
        let links = nl.links().await.unwrap();
        assert!(links.iter().any(|l| l.iface == "lo"));
    })
    .unwrap();
}

/// Waits (bounded) for an event matching `want`, skipping others.
async fn expect_event(
    rx: &mut mpsc::Receiver<NetEvent>,
    what: &str,
    want: impl Fn(&NetEvent) -> bool,
) -> NetEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut skipped = Vec::new();
    for _ in 0..1000 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(event)) if want(&event) => return event,
            Ok(Some(event)) => skipped.push(event),
            Ok(None) => panic!("watch ended while waiting for {what}"),
            Err(_) => break,
        }
    }
    panic!("no {what} within 3 s; other events: {skipped:?}");
}

#[test]
fn watch_reports_removal_behind_our_back_and_link_changes() {
    let Some(lab) = common::lab("watch_reports_removal_behind_our_back_and_link_changes", 1) else {
        return;
    };
    let ns = lab.ns_name(0);
    block_on_in_ns(&ns, || async {
        let nl = Netlink::connect().await.unwrap();
        let mut rx = netlink::watch().await.unwrap();
        let vip = spec("eth0:198.18.0.53/24");
        let ip: IpAddr = vip.ip;

        // Installs and renewals are not reported (see
        // `the_watch_socket_never_receives_address_additions`).
        nl.install(&vip, Duration::from_secs(30)).await.unwrap();
        nl.renew(&vip, Duration::from_secs(30)).await.unwrap();

        // Someone else deletes it.
        lab.ip(&ns, &["addr", "del", "198.18.0.53/24", "dev", "eth0"])
            .unwrap();
        expect_event(&mut rx, "AddressRemoved", |e| {
            *e == NetEvent::AddressRemoved {
                iface: "eth0".into(),
                ip,
                prefix: 24,
            }
        })
        .await;

        // Carrier loss, seen from inside: up but no carrier.
        lab.set_carrier(0, false).unwrap();
        expect_event(&mut rx, "carrier loss", |e| {
            *e == NetEvent::LinkChanged {
                iface: "eth0".into(),
                up: true,
                carrier: false,
            }
        })
        .await;
        lab.set_carrier(0, true).unwrap();
        expect_event(&mut rx, "carrier back", |e| {
            *e == NetEvent::LinkChanged {
                iface: "eth0".into(),
                up: true,
                carrier: true,
            }
        })
        .await;

        // The link goes down.
        lab.set_link(0, false).unwrap();
        expect_event(
            &mut rx,
            "link down",
            |e| matches!(e, NetEvent::LinkChanged { iface, up: false, .. } if iface == "eth0"),
        )
        .await;
        lab.set_link(0, true).unwrap();
        expect_event(
            &mut rx,
            "link up",
            |e| matches!(e, NetEvent::LinkChanged { iface, up: true, .. } if iface == "eth0"),
        )
        .await;

        // An address expiring is a removal too.
        let short = spec("eth0:198.18.0.54/24");
        nl.install(&short, Duration::from_secs(1)).await.unwrap();
        expect_event(
            &mut rx,
            "AddressRemoved (expired)",
            |e| matches!(e, NetEvent::AddressRemoved { ip, .. } if *ip == short.ip),
        )
        .await;

        // A new link shows up by name, and its deletion too.
        lab.ip(
            &ns,
            &[
                "link", "add", "vfcha", "type", "veth", "peer", "name", "vfchb",
            ],
        )
        .unwrap();
        lab.ip(&ns, &["link", "set", "vfcha", "up"]).unwrap();
        expect_event(
            &mut rx,
            "new veth link up",
            |e| matches!(e, NetEvent::LinkChanged { iface, up: true, .. } if iface == "vfcha"),
        )
        .await;
        lab.ip(&ns, &["link", "del", "vfcha"]).unwrap();
        expect_event(&mut rx, "veth link removed", |e| {
            *e == NetEvent::LinkRemoved {
                iface: "vfcha".into(),
            }
        })
        .await;
    })
    .unwrap();
}

#[test]
fn install_remove_round_trip_time() {
    let Some(lab) = common::lab("install_remove_round_trip_time", 1) else {
        return;
    };
    block_on_in_ns(&lab.ns_name(0), || async {
        let nl = Netlink::connect().await.unwrap();
        let lease = Duration::from_secs(30);
        for (vip, rounds) in [
            (spec("eth0:198.18.0.60/24"), 500u32),
            (spec("eth0:2001:db8::60/64"), 500),
        ] {
            // Warm up.
            nl.install(&vip, lease).await.unwrap();
            nl.remove(&vip).await.unwrap();
            let start = Instant::now();
            for _ in 0..rounds {
                assert_eq!(nl.install(&vip, lease).await.unwrap(), Applied::Created);
                assert_eq!(nl.remove(&vip).await.unwrap(), Removed::Deleted);
            }
            let per = start.elapsed() / rounds;
            let start = Instant::now();
            nl.install(&vip, lease).await.unwrap();
            for _ in 0..rounds {
                nl.renew(&vip, lease).await.unwrap();
            }
            let renew = start.elapsed() / rounds;
            nl.remove(&vip).await.unwrap();
            eprintln!(
                "{}: install+remove {:.1} µs, renew {:.1} µs (mean of {rounds})",
                if vip.is_ipv4() { "IPv4" } else { "IPv6" },
                per.as_secs_f64() * 1e6,
                renew.as_secs_f64() * 1e6
            );
            assert!(
                per < Duration::from_millis(5),
                "install+remove took {per:?}"
            );
        }
    })
    .unwrap();
}

/// The watch's socket filter drops every RTM_NEWADDR in the kernel (the
/// kernel notifies each lease renewal) and lets removals through: a raw
/// netlink socket subscribed to address changes, with the same filter,
/// receives the removal of an address it saw installed and renewed ten
/// times, and not one addition.
#[test]
fn the_watch_socket_never_receives_address_additions() {
    let Some(lab) = common::lab("the_watch_socket_never_receives_address_additions", 1) else {
        return;
    };
    block_on_in_ns(&lab.ns_name(0), || async {
        // SAFETY: plain socket calls on a descriptor this test owns.
        let fd = unsafe {
            let fd = libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::NETLINK_ROUTE,
            );
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let mut addr: libc::sockaddr_nl = std::mem::zeroed();
            addr.nl_family = libc::AF_NETLINK as u16;
            addr.nl_groups = libc::RTMGRP_IPV4_IFADDR as u32;
            let rc = libc::bind(
                fd,
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            );
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            fd
        };
        netlink::drop_address_additions(fd).unwrap();
        let nl = Netlink::connect().await.unwrap();
        let vip = spec("eth0:198.18.0.55/24");
        nl.install(&vip, Duration::from_secs(30)).await.unwrap();
        for _ in 0..10 {
            nl.renew(&vip, Duration::from_secs(30)).await.unwrap();
        }
        nl.remove(&vip).await.unwrap();
        // Every notification was queued before `remove` returned.
        let mut types = Vec::new();
        let mut buf = [0u8; 8192];
        for _ in 0..1000 {
            // SAFETY: reads into a buffer this test owns.
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                break;
            }
            // One message per notification: its type follows the length.
            types.push(u16::from_ne_bytes([buf[4], buf[5]]));
        }
        // SAFETY: closes the descriptor opened above.
        unsafe { libc::close(fd) };
        assert_eq!(types, vec![libc::RTM_DELADDR], "message types received");
    })
    .unwrap();
}
