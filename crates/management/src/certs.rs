//! Certificates uploaded as PFX (PKCS#12, with a password) or PEM: what APIM derives from them
//! (subject, thumbprint, expiration date) and the private key, which the caller seals.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::Digest;

pub struct ParsedCertificate {
    pub subject: String,
    /// SHA-1 of the DER certificate, upper-case hex, as APIM shows it.
    pub thumbprint: String,
    /// RFC 3339, UTC.
    pub expiration_date: String,
    pub certificate_pem: String,
    pub private_key_pem: Option<String>,
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn describe(
    cert_der: &[u8],
    key_der: Option<Vec<u8>>,
    key_label: &str,
) -> Result<ParsedCertificate, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let expires = cert.validity().not_after.to_datetime();
    let expiration_date = expires
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("the certificate's expiry cannot be formatted: {e}"))?;
    Ok(ParsedCertificate {
        subject: cert.subject().to_string(),
        thumbprint: hex::encode_upper(sha1::Sha1::digest(cert_der)),
        expiration_date,
        certificate_pem: pem_block("CERTIFICATE", cert_der),
        private_key_pem: key_der.map(|k| pem_block(key_label, &k)),
    })
}

/// Parses `data`: PEM text (a certificate, optionally with its private key), or base64 of a PFX
/// opened with `password`.
pub fn parse(data: &str, password: &str) -> Result<ParsedCertificate, String> {
    if data.contains("-----BEGIN") {
        let mut cert: Option<Vec<u8>> = None;
        let mut key: Option<(Vec<u8>, String)> = None;
        for pem in x509_parser::pem::Pem::iter_from_buffer(data.as_bytes()) {
            let pem = pem.map_err(|e| format!("'data' is not valid PEM: {e}"))?;
            match pem.label.as_str() {
                "CERTIFICATE" if cert.is_none() => cert = Some(pem.contents),
                "CERTIFICATE" => {}
                l if l.ends_with("PRIVATE KEY") => key = Some((pem.contents, l.to_string())),
                other => return Err(format!("unexpected PEM block '{other}' in 'data'")),
            }
        }
        let cert = cert.ok_or("'data' has no CERTIFICATE block")?;
        let (key_der, label) = match key {
            Some((k, l)) => (Some(k), l),
            None => (None, "PRIVATE KEY".to_string()),
        };
        return describe(&cert, key_der, &label);
    }
    let cleaned: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(cleaned)
        .map_err(|_| "'data' must be a base64-encoded PFX or PEM text".to_string())?;
    let store = p12_keystore::KeyStore::from_pkcs12(
        &der,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| format!("the PFX cannot be opened (wrong password or damaged file): {e}"))?;
    if let Some((_, chain)) = store.private_key_chain()
        && let Some(cert) = chain.certs().first()
    {
        return describe(
            cert.as_der(),
            Some(chain.key().as_der().to_vec()),
            "PRIVATE KEY",
        );
    }
    for (_, entry) in store.entries() {
        if let p12_keystore::KeyStoreEntry::Certificate(c) = entry {
            return describe(c.as_der(), None, "PRIVATE KEY");
        }
    }
    Err("the PFX holds no certificate".into())
}
