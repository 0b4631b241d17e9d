//! Unit tests of the health checks and the gateway echo.

use super::*;

#[test]
fn rise_and_fall_need_streaks() {
    let mut t = Tracker::new(2, 3);
    assert_eq!(t.observe(true), None);
    assert_eq!(t.observe(false), None, "a streak is broken by a failure");
    assert_eq!(t.observe(true), None);
    assert_eq!(t.observe(true), Some(true));
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(true), None);
    for _ in 0..2 {
        assert_eq!(t.observe(false), None);
    }
    assert_eq!(t.observe(false), Some(false));
}

const GW4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 254));
const GW6: IpAddr = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));

fn echo() -> Echo {
    Echo {
        ident: 0x1234,
        seq: 7,
        cookie: *b"0123456789abcdef",
    }
}

/// The reply the gateway would send to `req`: an IPv4 packet from
/// `src`, or a bare ICMPv6 message.
fn reply_to(req: &[u8], v6: bool, src: IpAddr) -> Vec<u8> {
    let mut icmp = req.to_vec();
    icmp[0] = if v6 { 129 } else { 0 };
    if v6 {
        return icmp;
    }
    let IpAddr::V4(src) = src else { unreachable!() };
    let mut ip = vec![0x45u8, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
    ip.extend(src.octets());
    ip.extend([198, 18, 0, 1]);
    ip.extend(&icmp);
    ip
}

#[test]
fn echo_request_checksum_verifies_and_carries_the_cookie() {
    let p = echo_request(false, &echo());
    assert_eq!(checksum(&p), 0, "a correct ICMP checksum sums to zero");
    assert_eq!(p[0], 8);
    assert_eq!(&p[8..24], b"0123456789abcdef");
    assert_eq!(echo_request(true, &echo())[0], 128);
}

#[test]
fn only_the_reply_with_our_id_sequence_and_cookie_from_the_gateway_matches() {
    for (gw, v6) in [(GW4, false), (GW6, true)] {
        let req = echo_request(v6, &echo());
        let good = reply_to(&req, v6, gw);
        assert!(is_echo_reply(&good, gw, gw, &echo()), "{gw}");
        let at = if v6 { 0 } else { 20 };
        // Forgeries by a neighbour that did not see the request.
        let forge = |f: &dyn Fn(&mut Echo)| {
            let mut e = echo();
            f(&mut e);
            reply_to(&echo_request(v6, &e), v6, gw)
        };
        let wrong_id = forge(&|e| e.ident ^= 1);
        let wrong_seq = forge(&|e| e.seq += 1);
        let wrong_cookie = forge(&|e| e.cookie[15] ^= 1);
        let no_cookie = good[..at + 8].to_vec();
        for (what, bad) in [
            ("wrong id", wrong_id),
            ("wrong sequence", wrong_seq),
            ("wrong cookie", wrong_cookie),
            ("no cookie", no_cookie),
        ] {
            assert!(!is_echo_reply(&bad, gw, gw, &echo()), "{gw}: {what}");
        }
        // Our own request (a looped-back copy) is no reply.
        let mut request = good.clone();
        request[at] = if v6 { 128 } else { 8 };
        assert!(!is_echo_reply(&request, gw, gw, &echo()), "{gw}: request");
        // Right id, sequence and cookie, but not from the gateway.
        let other: IpAddr = if v6 {
            "2001:db8::66".parse().unwrap()
        } else {
            "198.18.0.66".parse().unwrap()
        };
        assert!(!is_echo_reply(&good, other, gw, &echo()), "{gw}: source");
        // Cut short.
        assert!(!is_echo_reply(&good[..at + 20], gw, gw, &echo()));
    }
    // IPv4: the header's source must be the gateway too, and the
    // packet ICMP.
    let req = echo_request(false, &echo());
    let spoofed = reply_to(&req, false, "198.18.0.66".parse().unwrap());
    assert!(!is_echo_reply(&spoofed, GW4, GW4, &echo()));
    let mut not_icmp = reply_to(&req, false, GW4);
    not_icmp[9] = 17;
    assert!(!is_echo_reply(&not_icmp, GW4, GW4, &echo()));
}

/// In the namespace lab (198.18.0.0/15 and 2001:db8::/32 only, never
/// the host's namespace): a node pings the client as its gateway over
/// the connected socket, and an address nobody has goes unanswered.
#[test]
fn the_gateway_answers_in_the_lab_and_a_silent_one_does_not() {
    if !fechter_linux::lab::require_lab("health::the_gateway_answers_in_the_lab") {
        return;
    }
    let lab = fechter_linux::Lab::new(1).expect("the lab");
    let (v4, v6) = (IpAddr::V4(lab.client_ipv4()), IpAddr::V6(lab.client_ipv6()));
    let silent: IpAddr = "198.18.0.253".parse().unwrap();
    let got = fechter_linux::lab::block_on_in_ns(&lab.ns_name(0), move || async move {
        let second = Duration::from_secs(1);
        // The first echo may wait for neighbour resolution.
        let v4_ok = ping_once(v4, second).await || ping_once(v4, second).await;
        let v6_ok = ping_once(v6, second).await || ping_once(v6, second).await;
        let mut p = Pinger::new(v4).unwrap();
        let sequence = [p.ping(1, second).await, p.ping(2, second).await];
        let silent_ok = ping_once(silent, Duration::from_millis(300)).await;
        (v4_ok, v6_ok, sequence, silent_ok)
    })
    .expect("running in the lab");
    assert_eq!(got, (true, true, [true, true], false));
}

#[test]
fn identifiers_and_cookies_are_random() {
    let a: [u8; COOKIE_LEN] = random();
    let b: [u8; COOKIE_LEN] = random();
    assert_ne!(a, b);
}

#[test]
fn sources_are_read_from_either_family() {
    let (st, _) = socket2_addr(SocketAddr::new(GW4, 0));
    assert_eq!(source_of(&st), Some(GW4));
    let (st, _) = socket2_addr(SocketAddr::new(GW6, 0));
    assert_eq!(source_of(&st), Some(GW6));
}

#[tokio::test]
async fn scripts_pass_fail_and_are_killed_at_their_timeout() {
    assert_eq!(run_script("exit 0", Duration::from_secs(5)).await, Ok(()));
    let failed = run_script("echo broken >&2; exit 3", Duration::from_secs(5)).await;
    assert_eq!(failed, Err("exit status: 3: broken".to_owned()));
    let t0 = std::time::Instant::now();
    let hung = run_script("sleep 30", Duration::from_millis(200)).await;
    assert!(hung.unwrap_err().starts_with("timed out after 200 ms"));
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "the hung script was killed"
    );
}

#[tokio::test]
async fn a_timed_out_check_is_killed_with_its_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cmd = format!("sleep 30 & echo $! > {}; wait", pidfile.display());
    assert!(run_script(&cmd, Duration::from_millis(300)).await.is_err());
    let pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    };
    let t = std::time::Instant::now();
    while !gone() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone(), "the check's background sleep {pid} survived");
}

#[tokio::test]
async fn a_check_printing_ten_megabytes_is_read_capped() {
    let t0 = std::time::Instant::now();
    let cmd = "head -c 10000000 /dev/zero | tr '\\0' x; exit 1";
    let err = run_script(cmd, Duration::from_secs(20)).await.unwrap_err();
    assert!(err.starts_with("exit status: 1: xxxx"), "{}", &err[..40]);
    assert!(err.len() < 2048, "{} bytes", err.len());
    assert!(err.ends_with(" more bytes)"), "{}", &err[err.len() - 40..]);
    // Printing 10 MB is no failure by itself.
    let quiet = "head -c 10000000 /dev/zero";
    assert_eq!(run_script(quiet, Duration::from_secs(20)).await, Ok(()));
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}
