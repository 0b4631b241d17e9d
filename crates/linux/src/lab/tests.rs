//! The lab's own tests (no namespaces needed).

use super::*;

#[test]
fn mac_parse_and_format() {
    assert_eq!(parse_mac("02:fc:00:00:00:0a"), Some([2, 0xfc, 0, 0, 0, 10]));
    assert_eq!(parse_mac("02:fc:00:00:00"), None);
    assert_eq!(parse_mac("02:fc:00:00:00:0a:01"), None);
    assert_eq!(parse_mac("zz:fc:00:00:00:0a"), None);
    assert_eq!(format_mac([2, 0xfc, 0, 0, 0, 10]), "02:fc:00:00:00:0a");
}

#[test]
fn prefixes_are_short_and_distinct() {
    let a = unique_prefix();
    let b = unique_prefix();
    assert_ne!(a, b);
    for p in [&a, &b] {
        assert!(p.starts_with("fch") && p.len() == 8, "{p}");
        // The longest link name: PREFIX + "p" + two digits.
        assert!(p.len() + 3 <= 15);
    }
}

#[test]
fn too_many_nodes() {
    let e = Lab::new(MAX_NODES + 1).unwrap_err();
    assert!(matches!(e, LabError::TooManyNodes { .. }), "{e}");
}
