//! The wire as the lock: probes are answered by the holder and only by it,
//! announcements and probes of others are heard, and the received-frame
//! counter follows the link.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use fechter_core::AddrSpec;
use fechter_linux::announce::Announcer;
use fechter_linux::lab::{Lab, block_on_in_ns, run_in_ns};
use fechter_linux::netlink::{Applied, Netlink};
use fechter_linux::wire::{Claim, ClaimKind, WireWatch};

const LEASE: Duration = Duration::from_secs(30);

fn install(lab: &Lab, node: usize, vip: &str) -> IpAddr {
    let vip = AddrSpec::parse(vip).unwrap();
    let applied = block_on_in_ns(&lab.ns_name(node), || async {
        Netlink::connect()
            .await
            .unwrap()
            .install(&vip, LEASE)
            .await
            .unwrap()
    })
    .unwrap();
    assert_eq!(applied, Applied::Created);
    vip.ip
}

/// A watch on node `node`'s `eth0`. Its sockets stay in the node's namespace
/// whichever thread uses them.
fn watch(lab: &Lab, node: usize) -> WireWatch {
    run_in_ns(&lab.ns_name(node), || WireWatch::open("eth0"))
        .unwrap()
        .unwrap()
}

/// Drains `w` into `heard` every 5 ms for at most `limit` until a claim in
/// `heard` matches `wanted`, and returns that claim.
fn wait_for(
    w: &mut WireWatch,
    heard: &mut Vec<Claim>,
    limit: Duration,
    wanted: impl Fn(&Claim) -> bool,
) -> Option<Claim> {
    let start = Instant::now();
    loop {
        w.drain(heard);
        if let Some(c) = heard.iter().find(|c| wanted(c)) {
            return Some(*c);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Node 1 probes `held` (on node 0) and `free` (nowhere): only `held` is
/// answered, by node 0's MAC; node 0 hears node 1's probe.
fn probe_is_answered_by_the_holder(lab: &Lab, held: IpAddr, free: IpAddr) {
    let mac0 = lab.mac_of(0).unwrap();
    let mac1 = lab.mac_of(1).unwrap();
    let mut w0 = watch(lab, 0);
    let mut w1 = watch(lab, 1);
    assert_eq!((w0.mac(), w1.mac(), w1.iface()), (mac0, mac1, "eth0"));

    let (mut heard0, mut heard1) = (Vec::new(), Vec::new());
    // The control: nothing claims `held` unasked.
    let unasked = wait_for(&mut w1, &mut heard1, Duration::from_millis(50), |c| {
        c.ip == held
    });
    assert_eq!(unasked, None);
    w1.probe(held).unwrap();
    let start = Instant::now();
    let answer = wait_for(&mut w1, &mut heard1, Duration::from_secs(1), |c| {
        c.ip == held && c.kind == ClaimKind::Answer
    });
    let answer = answer.unwrap_or_else(|| panic!("no answer to the probe of {held} within 1 s"));
    eprintln!("{held} answered after {:?}", start.elapsed());
    assert_eq!(answer.mac, mac0, "answered by the holder");
    let probe = wait_for(&mut w0, &mut heard0, Duration::from_secs(1), |c| {
        c.ip == held && c.kind == ClaimKind::Probe
    });
    assert_eq!(probe.map(|c| c.mac), Some(mac1), "node 0 heard the probe");

    w1.probe(free).unwrap();
    let answer = wait_for(&mut w1, &mut heard1, Duration::from_millis(200), |c| {
        c.ip == free && c.kind == ClaimKind::Answer
    });
    assert_eq!(answer, None, "nobody holds {free}: {heard1:?}");
    assert_eq!((w0.malformed(), w1.malformed()), (0, 0));
}

#[test]
fn arp_probe_is_answered_by_the_holder() {
    let Some(lab) = common::lab("arp_probe_is_answered_by_the_holder", 2) else {
        return;
    };
    let held = install(&lab, 0, "eth0:198.18.0.60/24");
    probe_is_answered_by_the_holder(&lab, held, "198.18.0.61".parse().unwrap());
}

#[test]
fn dad_probe_is_answered_by_the_holder() {
    let Some(lab) = common::lab("dad_probe_is_answered_by_the_holder", 2) else {
        return;
    };
    // Netlink installs IPv6 with IFA_F_NODAD: usable (not tentative) at once.
    let held = install(&lab, 0, "eth0:2001:db8::60/64");
    probe_is_answered_by_the_holder(&lab, held, "2001:db8::61".parse().unwrap());
}

#[test]
fn announcements_are_heard_and_own_probes_are_not() {
    let Some(lab) = common::lab("announcements_are_heard_and_own_probes_are_not", 2) else {
        return;
    };
    let (mac0, mac1) = (lab.mac_of(0).unwrap(), lab.mac_of(1).unwrap());
    let mut w0 = watch(&lab, 0);
    let mut w1 = watch(&lab, 1);
    let garp = Ipv4Addr::new(198, 18, 0, 62);
    let na = "2001:db8::62".parse().unwrap();
    run_in_ns(&lab.ns_name(0), || {
        let a = Announcer::new().unwrap();
        a.send_garp("eth0", garp).unwrap();
        a.send_na("eth0", na).unwrap();
    })
    .unwrap();
    let mut heard = Vec::new();
    for ip in [IpAddr::V4(garp), IpAddr::V6(na)] {
        let claim = wait_for(&mut w1, &mut heard, Duration::from_secs(1), |c| c.ip == ip);
        let claim = claim.unwrap_or_else(|| panic!("{ip} not heard: {heard:?}"));
        assert_eq!((claim.mac, claim.kind), (mac0, ClaimKind::Answer));
    }

    // Node 1's own probes: node 0 hears them, node 1's drain does not
    // report them (and reads no frame for them at all).
    let probes: [IpAddr; 2] = [
        "198.18.0.63".parse().unwrap(),
        "2001:db8::63".parse().unwrap(),
    ];
    w1.drain(&mut Vec::new());
    for ip in probes {
        w1.probe(ip).unwrap();
    }
    let mut heard = Vec::new();
    for ip in probes {
        let claim = wait_for(&mut w0, &mut heard, Duration::from_secs(1), |c| c.ip == ip);
        assert_eq!(
            claim.map(|c| (c.mac, c.kind)),
            Some((mac1, ClaimKind::Probe)),
            "{ip}"
        );
    }
    let mut own = Vec::new();
    let frames = w1.drain(&mut own);
    assert!(own.is_empty(), "own probes reported: {own:?}");
    assert_eq!(frames, 0, "own frames reached the sockets");

    // The socket filter: echo requests and replies (and the neighbour
    // discovery they need) do not become malformed frames.
    for ip in [lab.node_ipv4(1).into(), lab.node_ipv6(1).into()] {
        for _ in 0..3 {
            assert!(
                lab.ping_once(&lab.ns_name(0), ip, Duration::from_secs(1))
                    .unwrap()
            );
        }
    }
    let mut claims = Vec::new();
    let frames = w1.drain(&mut claims);
    eprintln!("after 6 pings node 1 read {frames} frames: {claims:?}");
    assert!(frames < 6, "{frames} frames passed the filter for 6 pings");
    assert_eq!((w0.malformed(), w1.malformed()), (0, 0));
}

/// Whether `w`'s received-frame counter reaches `from + n` within 1 s.
fn grows_by(w: &WireWatch, from: u64, n: u64) -> bool {
    common::poll_until_blocking(Duration::from_secs(1), Duration::from_millis(5), || {
        w.rx_frames().unwrap() >= from + n
    })
    .is_some()
}

#[test]
fn rx_frames_follows_the_link() {
    let Some(lab) = common::lab("rx_frames_follows_the_link", 2) else {
        return;
    };
    // (The lab's switch has no IPv6 stack of its own: it sends nothing.)
    let mut w1 = watch(&lab, 1);
    let send_garps = |n: usize| {
        run_in_ns(&lab.ns_name(0), || {
            let a = Announcer::new().unwrap();
            for _ in 0..n {
                a.send_garp("eth0", Ipv4Addr::new(198, 18, 0, 64)).unwrap();
            }
        })
        .unwrap();
    };

    let before = w1.rx_frames().unwrap();
    send_garps(10);
    assert!(grows_by(&w1, before, 10), "10 GARPs not counted");

    w1.drain(&mut Vec::new());
    lab.detach(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let detached = w1.rx_frames().unwrap();
    send_garps(10);
    assert!(
        lab.ping_once(
            &lab.ns_name(0),
            lab.node_ipv4(1).into(),
            Duration::from_secs(1)
        )
        .is_ok()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        w1.rx_frames().unwrap(),
        detached,
        "frames arrived while detached"
    );
    let mut heard = Vec::new();
    w1.drain(&mut heard);
    assert!(heard.is_empty(), "heard while detached: {heard:?}");

    lab.reattach(1).unwrap();
    let reattached = w1.rx_frames().unwrap();
    send_garps(10);
    assert!(
        grows_by(&w1, reattached, 10),
        "10 GARPs not counted after reattaching"
    );
}

#[test]
fn open_errors_name_the_interface() {
    let Some(lab) = common::lab("open_errors_name_the_interface", 1) else {
        return;
    };
    run_in_ns(&lab.ns_name(0), || {
        let e = WireWatch::open("nosuch0").unwrap_err();
        assert!(e.is_interface_not_found(), "{e:?}");
        let e = WireWatch::open("lo").unwrap_err();
        assert!(e.to_string().contains("not an Ethernet"), "{e}");
    })
    .unwrap();
}
