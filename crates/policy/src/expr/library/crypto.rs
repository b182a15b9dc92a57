//! `System.Security.Cryptography` hashes and HMACs, `Encoding`, and random bytes — the pieces
//! APIM policies use to sign requests (SAS tokens, HMAC signatures) and to hash keys.

use super::super::value::{EvalError, Native, Obj, R, V, arg, check_len, fail, int};
use hmac::{KeyInit, Mac};
use sha2::Digest;

/// The algorithm names APIM's allowed types give (`HMACSHA256`, `SHA1Managed`, `MD5`, …).
pub fn is_hash(name: &str) -> bool {
    matches!(
        name.trim_end_matches("Managed"),
        "MD5"
            | "SHA1"
            | "SHA256"
            | "SHA384"
            | "SHA512"
            | "HMACMD5"
            | "HMACSHA1"
            | "HMACSHA256"
            | "HMACSHA384"
            | "HMACSHA512"
    )
}

fn mac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Result<Vec<u8>, EvalError> {
    let mut m = <M as KeyInit>::new_from_slice(key)
        .map_err(|_| EvalError("the HMAC key is not usable".into()))?;
    m.update(data);
    Ok(m.finalize().into_bytes().to_vec())
}

/// The digest of `data` by `algorithm`, keyed for the HMACs.
pub fn digest(algorithm: &str, key: Option<&[u8]>, data: &[u8]) -> Result<Vec<u8>, EvalError> {
    let key = key.unwrap_or(&[]);
    Ok(match algorithm.trim_end_matches("Managed") {
        "MD5" => md5::Md5::digest(data).to_vec(),
        "SHA1" => sha1::Sha1::digest(data).to_vec(),
        "SHA256" => sha2::Sha256::digest(data).to_vec(),
        "SHA384" => sha2::Sha384::digest(data).to_vec(),
        "SHA512" => sha2::Sha512::digest(data).to_vec(),
        "HMACMD5" => mac::<hmac::Hmac<md5::Md5>>(key, data)?,
        "HMACSHA1" => mac::<hmac::Hmac<sha1::Sha1>>(key, data)?,
        "HMACSHA256" => mac::<hmac::Hmac<sha2::Sha256>>(key, data)?,
        "HMACSHA384" => mac::<hmac::Hmac<sha2::Sha384>>(key, data)?,
        "HMACSHA512" => mac::<hmac::Hmac<sha2::Sha512>>(key, data)?,
        a => return fail(format!("{a} is not a hash algorithm")),
    })
}

/// Bytes of an argument: a byte[] (or a string, as UTF-8, for convenience).
pub fn bytes_of(v: &V) -> Result<Vec<u8>, EvalError> {
    match v {
        V::Bytes(b) => Ok(b.lock().clone()),
        V::List(l) => l
            .lock()
            .iter()
            .map(|x| int(x).and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| EvalError("the array is not bytes".into())),
        V::Str(s) => Ok(s.as_bytes().to_vec()),
        other => fail(format!("bytes expected, not {}", other.type_name())),
    }
}

pub fn encode(encoding: &str, s: &str) -> Vec<u8> {
    match encoding {
        "ASCII" => s
            .chars()
            .map(|c| if c.is_ascii() { c as u8 } else { b'?' })
            .collect(),
        "Latin1" => s
            .chars()
            .map(|c| u8::try_from(c as u32).unwrap_or(b'?'))
            .collect(),
        "Unicode" => s.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        "BigEndianUnicode" => s.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        "UTF32" => s.chars().flat_map(|c| (c as u32).to_le_bytes()).collect(),
        _ => s.as_bytes().to_vec(),
    }
}

pub fn decode(encoding: &str, b: &[u8]) -> String {
    match encoding {
        "ASCII" => b
            .iter()
            .map(|c| if c.is_ascii() { *c as char } else { '?' })
            .collect(),
        "Latin1" => b.iter().map(|c| *c as char).collect(),
        "Unicode" | "BigEndianUnicode" => {
            let units: Vec<u16> = b
                .chunks_exact(2)
                .map(|p| {
                    if encoding == "Unicode" {
                        u16::from_le_bytes([p[0], p[1]])
                    } else {
                        u16::from_be_bytes([p[0], p[1]])
                    }
                })
                .collect();
            String::from_utf16_lossy(&units)
        }
        "UTF32" => b
            .chunks_exact(4)
            .filter_map(|p| char::from_u32(u32::from_le_bytes([p[0], p[1], p[2], p[3]])))
            .collect(),
        _ => String::from_utf8_lossy(b).into_owned(),
    }
}

pub fn random_bytes(n: usize) -> Result<Vec<u8>, EvalError> {
    check_len(n)?;
    let mut b = vec![0u8; n];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    Ok(b)
}

pub fn member(v: &V, name: &str) -> Option<R> {
    let V::Obj(o) = v else { return None };
    match (&*o.lock(), name) {
        (Obj::Hash { key, .. }, "Key") => Some(Ok(V::bytes(key.clone().unwrap_or_default()))),
        (Obj::Hash { algorithm, .. }, "HashSize") => {
            Some(digest(algorithm, Some(b"k"), b"").map(|d| V::Int(d.len() as i64 * 8)))
        }
        _ => None,
    }
}

pub fn call(v: &V, name: &str, args: &[V]) -> Option<R> {
    if let V::Obj(o) = v {
        let (algorithm, key) = match &*o.lock() {
            Obj::Hash { algorithm, key } => (algorithm.clone(), key.clone()),
            _ => return None,
        };
        return match name {
            "ComputeHash" => Some((|| {
                let mut data = bytes_of(&arg(args, 0, name)?)?;
                if let (Some(offset), Some(count)) =
                    (args.get(1).and_then(int), args.get(2).and_then(int))
                {
                    let (o, c) = (offset.max(0) as usize, count.max(0) as usize);
                    data = data
                        .get(o..o + c)
                        .ok_or_else(|| {
                            EvalError("ComputeHash: the range is outside the array".into())
                        })?
                        .to_vec();
                }
                digest(&algorithm, key.as_deref(), &data).map(V::bytes)
            })()),
            "Dispose" | "Initialize" | "Clear" => Some(Ok(V::Null)),
            _ => None,
        };
    }
    let V::Native(n) = v else { return None };
    match (&**n, name) {
        (Native::Encoding(e), "GetBytes") => {
            Some(arg(args, 0, name).map(|s| V::bytes(encode(e, &s.text()))))
        }
        (Native::Encoding(e), "GetByteCount") => {
            Some(arg(args, 0, name).map(|s| V::Int(encode(e, &s.text()).len() as i64)))
        }
        (Native::Encoding(e), "GetString") => Some((|| {
            let b = bytes_of(&arg(args, 0, name)?)?;
            let b = match (args.get(1).and_then(int), args.get(2).and_then(int)) {
                (Some(o), Some(c)) => b
                    .get(o.max(0) as usize..(o + c).max(0) as usize)
                    .ok_or_else(|| EvalError("GetString: the range is outside the array".into()))?
                    .to_vec(),
                _ => b,
            };
            Ok(V::Str(decode(e, &b)))
        })()),
        _ => None,
    }
}
