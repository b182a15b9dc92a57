//! The move's parsers take operator input (key files, overlays, --dns): they answer bad input
//! with an error, never a panic.

use gatehouse_mover::dns::TsigKey;
use gatehouse_mover::options::parse_dns;
use gatehouse_mover::overlay::Overlay;
use proptest::prelude::*;

proptest! {
    #[test]
    fn tsig_keys_never_panic(s in "\\PC{0,80}") {
        let _ = TsigKey::parse(&s);
    }

    #[test]
    fn dns_specs_never_panic(s in "(rfc2136|manual|x)://[0-9a-z.:\\[\\]]{0,30}") {
        let _ = parse_dns(Some(&s), Some("contoso.test"), None);
    }

    #[test]
    fn overlays_never_panic(s in "(backends|apis|namedValues|hostnames|certificates|url|value|serviceUrl|hostName|[-:{}\\[\\] \n'\"a-z0-9])*") {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.yaml");
        std::fs::write(&p, s).unwrap();
        let _ = Overlay::read(&p);
    }
}

#[test]
fn overlay_errors_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("o.yaml");
    std::fs::write(&p, "apis:\n  echo:\n    serviceUrl: [1, 2]\n").unwrap();
    let e = format!("{:#}", Overlay::read(&p).unwrap_err());
    assert!(
        e.contains("o.yaml") && e.contains("apis.echo.serviceUrl") || e.contains("line"),
        "{e}"
    );
    std::fs::write(&p, "certificates:\n  tls:\n    file: missing.pfx\n").unwrap();
    let e = format!("{:#}", Overlay::read(&p).unwrap_err());
    assert!(e.contains("missing.pfx"), "{e}");
}
