//! Archive URLs as the CLI takes them, split into the storage account, container and archive
//! name that APIM's backup and restore requests carry.

use std::path::Path;

/// An archive URL of the CLI split into APIM's triple: `az://ACCOUNT/CONTAINER/NAME`,
/// `s3://BUCKET/NAME`, `s3+http(s)://HOST[:PORT]/BUCKET/NAME`, `gs://BUCKET/NAME`,
/// `file:///FOLDER/CONTAINER/NAME`. A URL ending in `/` names a container (for listings).
pub fn split_url(url: &str) -> Result<(String, String, String), String> {
    let invalid = || {
        format!(
            "'{url}' is not an archive URL: use az://ACCOUNT/CONTAINER/NAME, s3://BUCKET/NAME, s3+http://HOST:PORT/BUCKET/NAME, gs://BUCKET/NAME or a file path"
        )
    };
    let split_last2 = |rest: &str| -> Option<(String, String, String)> {
        let rest = rest.trim_start_matches('/');
        let (head, name) = rest.rsplit_once('/')?;
        let (account_part, container) = match head.rsplit_once('/') {
            Some((a, c)) => (a.to_string(), c.to_string()),
            None => (String::new(), head.to_string()),
        };
        Some((account_part, container, name.to_string()))
    };
    if let Some(rest) = url.strip_prefix("az://") {
        let (account, rest) = rest.split_once('/').ok_or_else(invalid)?;
        let (container, name) = rest.split_once('/').unwrap_or((rest, ""));
        return Ok((account.to_string(), container.to_string(), name.to_string()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, name) = rest.split_once('/').unwrap_or((rest, ""));
        return Ok(("s3://".into(), bucket.to_string(), name.to_string()));
    }
    if let Some(rest) = url.strip_prefix("gs://") {
        let (bucket, name) = rest.split_once('/').unwrap_or((rest, ""));
        return Ok(("gs://".into(), bucket.to_string(), name.to_string()));
    }
    for scheme in ["s3+http://", "s3+https://"] {
        if let Some(rest) = url.strip_prefix(scheme) {
            let (host, path) = rest.split_once('/').ok_or_else(invalid)?;
            let (bucket, name) = path.split_once('/').unwrap_or((path, ""));
            return Ok((
                format!("{}{host}", scheme),
                bucket.to_string(),
                name.to_string(),
            ));
        }
    }
    let local = url.strip_prefix("file://").unwrap_or(url);
    let abs = if Path::new(local).is_absolute() {
        local.to_string()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve '{url}' against the working directory: {e}"))?
            .join(local)
            .to_string_lossy()
            .to_string()
    };
    let (account, container, name) = split_last2(&abs).ok_or_else(invalid)?;
    Ok((
        format!("file:///{}", account.trim_start_matches('/')),
        container,
        name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_every_kind_of_url() {
        let cases = [
            ("az://acct/box/a.ghbk", ("acct", "box", "a.ghbk")),
            ("s3://bucket/a.ghbk", ("s3://", "bucket", "a.ghbk")),
            (
                "s3+http://127.0.0.1:8014/bucket/a.ghbk",
                ("s3+http://127.0.0.1:8014", "bucket", "a.ghbk"),
            ),
            ("gs://bucket/a.ghbk", ("gs://", "bucket", "a.ghbk")),
            (
                "/var/backups/box/a.ghbk",
                ("file:///var/backups", "box", "a.ghbk"),
            ),
            (
                "file:///var/backups/box/a.ghbk",
                ("file:///var/backups", "box", "a.ghbk"),
            ),
        ];
        for (url, (a, c, n)) in cases {
            assert_eq!(
                split_url(url).unwrap(),
                (a.into(), c.into(), n.into()),
                "{url}"
            );
        }
        assert!(split_url("az://only-account").is_err());
    }
}
