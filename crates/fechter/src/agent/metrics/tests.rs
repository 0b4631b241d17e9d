//! The metrics' tests: names, labels and the `/metrics` server.

use super::*;

#[test]
fn the_text_names_every_metric() {
    let m = Metrics::new();
    m.took_over(70);
    m.handoff("given");
    m.announced();
    m.health("gateway", true);
    let text = m.encode();
    for name in [
        "fechter_members{state=\"alive\"} 0",
        "fechter_addresses_held 0",
        "fechter_addresses_waiting 0",
        "fechter_leader_term 0",
        "fechter_takeovers_total 1",
        "fechter_handoffs_total{direction=\"given\"} 1",
        "fechter_handoffs_total{direction=\"received\"} 0",
        "fechter_takeover_silence_seconds_count 1",
        "fechter_takeover_silence_seconds_bucket{le=\"0.08\"} 1",
        "fechter_takeover_silence_seconds_bucket{le=\"0.065\"} 0",
        "fechter_announcements_total 1",
        "fechter_health_check{check=\"gateway\"} 1",
        "fechter_quorum 1",
    ] {
        assert!(text.contains(name), "no {name} in:\n{text}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn get_metrics_over_http() {
    let m = Arc::new(Metrics::new());
    m.took_over(80);
    let addr = start(Some("127.0.0.1:0".parse().unwrap()), m).unwrap();
    let get = |req: &'static str| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = get("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
    assert!(ok.contains("fechter_takeovers_total 1"), "{ok}");
    assert!(ok.ends_with("# EOF\n"), "{ok}");
    let nf = get("GET / HTTP/1.1\r\n\r\n").await;
    assert!(nf.starts_with("HTTP/1.1 404"), "{nf}");
    let na = get("POST /metrics HTTP/1.1\r\n\r\n").await;
    assert!(na.starts_with("HTTP/1.1 405"), "{na}");
}

/// `GET /metrics` from `addr`, blocking (bounded): the answer.
fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn two_thousand_idle_connections_leave_metrics_answering() {
    limits::raise_nofile().unwrap();
    let m = Arc::new(Metrics::new());
    let addr = start(Some("127.0.0.1:0".parse().unwrap()), m).unwrap();
    let idle: Vec<std::net::TcpStream> = (0..2000)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let t = std::time::Instant::now();
    let text = scrape(addr);
    let took = t.elapsed();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(took < Duration::from_secs(1), "answered after {took:?}");
    let evicted = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "fechter_connections_dropped_total{server=\"metrics\",reason=\"evicted\"} ",
            )
        })
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no evicted count in:\n{text}"));
    // All but the slots' worth were closed to make room, the scrape's own
    // slot included.
    assert!(
        evicted > 2000 - LIMITS.max_connections as u64,
        "{evicted} evicted"
    );
    let open = idle
        .iter()
        .filter(|s| !limits::tests::closed(*s, |d| s.set_read_timeout(Some(d)).unwrap()))
        .count();
    assert!(
        open < LIMITS.max_connections,
        "{open} idle connections still open"
    );
}

#[test]
fn a_port_in_use_is_logged_not_fatal() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    assert_eq!(start(Some(addr), Arc::new(Metrics::new())), None);
    assert_eq!(start(None, Arc::new(Metrics::new())), None);
}
