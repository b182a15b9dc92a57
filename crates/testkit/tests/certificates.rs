//! Certificates: PEM and password-protected PFX uploads, derived fields, private keys never
//! returned and sealed at rest.

use base64::Engine;
use gatehouse_testkit::TestInstance;
use serde_json::json;
use sha1::Digest;

fn self_signed() -> (String, Vec<u8>, String, Vec<u8>) {
    let ck = rcgen::generate_simple_self_signed(vec!["gw.contoso.test".to_string()]).unwrap();
    (
        ck.cert.pem(),
        ck.cert.der().to_vec(),
        ck.signing_key.serialize_pem(),
        ck.signing_key.serialize_der(),
    )
}

#[tokio::test]
async fn pem_and_pfx_certificates() {
    let t = TestInstance::start().await.unwrap();
    let (cert_pem, cert_der, key_pem, key_der) = self_signed();
    let thumb = hex::encode_upper(sha1::Sha1::digest(&cert_der));

    // PEM with its private key.
    let (s, c) = t
        .call(
            "PUT",
            "/certificates/gw",
            Some(json!({"properties": {"data": format!("{cert_pem}{key_pem}")}})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["properties"]["thumbprint"], thumb.as_str());
    assert!(
        c["properties"]["subject"]
            .as_str()
            .unwrap()
            .contains("rcgen"),
        "{c}"
    );
    assert!(
        c["properties"]["expirationDate"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    let text = c.to_string();
    assert!(!text.contains("PRIVATE KEY") && !text.contains("\"data\""));

    // PFX protected by a password.
    let mut ks = p12_keystore::KeyStore::new();
    let chain = p12_keystore::PrivateKeyChain::new(
        thumb.as_bytes().to_vec(),
        p12_keystore::PrivateKey::from_der(&key_der).unwrap(),
        [p12_keystore::Certificate::from_der(&cert_der).unwrap()],
    );
    ks.add_entry("gw", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let pfx = ks.writer("pfx-pass").write().unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(&pfx);
    let (s, c) = t
        .call(
            "PUT",
            "/certificates/gw-pfx",
            Some(json!({"properties": {"data": data, "password": "pfx-pass"}})),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["properties"]["thumbprint"], thumb.as_str());
    // A wrong password or garbage is a 400 that says so, and nothing is stored.
    let (s, e) = t
        .call(
            "PUT",
            "/certificates/bad",
            Some(json!({"properties": {"data": data, "password": "nope"}})),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        e["error"]["message"].as_str().unwrap().contains("password"),
        "{e}"
    );
    let (s, _) = t
        .call(
            "PUT",
            "/certificates/bad",
            Some(json!({"properties": {"data": "!!not base64!!"}})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = t
        .call("PUT", "/certificates/bad", Some(json!({"properties": {}})))
        .await;
    assert_eq!(s, 400);
    assert_eq!(t.call("GET", "/certificates/bad", None).await.0, 404);

    // The private key is sealed on disk.
    let mut disk = std::fs::read(t.data_dir.join("gatehouse.db")).unwrap();
    disk.extend(std::fs::read(t.data_dir.join("gatehouse.db-wal")).unwrap_or_default());
    let key_body = key_pem.lines().nth(1).unwrap().as_bytes().to_vec();
    assert!(
        !disk
            .windows(key_body.len())
            .any(|w| w == key_body.as_slice())
    );

    // A backend that uses the certificate keeps it from being deleted.
    let (s, b) = t.call("PUT", "/backends/b", Some(json!({"properties": {"url": "https://backend.local", "protocol": "http", "credentials": {"certificateIds": ["/certificates/gw"]}}}))).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(t.call("DELETE", "/certificates/gw", None).await.0, 409);
    assert_eq!(
        t.call(
            "PUT",
            "/backends/c",
            Some(json!({"properties": {"url": "ftp://x", "protocol": "http"}}))
        )
        .await
        .0,
        400
    );
}
