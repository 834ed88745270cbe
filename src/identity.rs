//! The peer ID a private key stands for, as the daemon checks it at every
//! load (config/identity.go `Validate`: "identity ID does not match the
//! private_key"). The key is base64 (Go's StdEncoding) of a libp2p protobuf
//! `PrivateKey { Type = 1; Data = 2 }`. For Ed25519 (type 1) Data is the
//! 64-byte seed‖public key, or 96 bytes with the public key repeated
//! (go-libp2p core/crypto/ed25519.go `UnmarshalEd25519PrivateKey`), and the
//! peer ID is the identity multihash of the protobuf `PublicKey` (type 1, the
//! last 32 bytes). Other key types (RSA, secp256k1, ECDSA) are not checked.
//! Pure; never prints a key.

use crate::exit::Error;

/// What a private key says about its peer ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyId {
    /// An Ed25519 key: its peer ID (base58btc).
    Ed25519(String),
    /// Another key type: not checked.
    Other,
}

/// The peer ID of `private_key` (base64), or why the daemon would refuse it.
pub fn peer_id_of(private_key: &str) -> Result<KeyId, String> {
    let bytes =
        base64_std(private_key).ok_or("is not base64 (the daemon would stop: \"error decoding private_key\")")?;
    let (key_type, data) = private_key_fields(&bytes).ok_or("is not a libp2p protobuf private key")?;
    if key_type != 1 {
        return Ok(KeyId::Other);
    }
    let public = match data.len() {
        64 => &data[32..64],
        96 if data[32..64] == data[64..96] => &data[32..64],
        96 => return Err("is an Ed25519 key whose repeated public key differs (the daemon refuses it)".into()),
        n => return Err(format!("is an Ed25519 key of {n} bytes (the daemon takes 64 or 96)")),
    };
    // Identity multihash (0x00, length 36) of PublicKey { Type: Ed25519, Data: public }.
    let mut mh = vec![0x00, 36, 0x08, 0x01, 0x12, 32];
    mh.extend_from_slice(public);
    Ok(KeyId::Ed25519(bs58::encode(mh).into_string()))
}

/// Where the daemon takes a peer ID or a private key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    /// A variable (CLUSTER_ID, CLUSTER_PRIVATEKEY).
    Env(&'static str),
    /// A file's field (identity.json's `id`, service.json's legacy `cluster.id`).
    File(std::path::PathBuf, &'static str),
}

impl std::fmt::Display for From {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            From::Env(v) => f.write_str(v),
            From::File(p, field) => write!(f, "{}'s {field}", p.display()),
        }
    }
}

/// The daemon's check of an identity: `id` must be the peer ID of `key`.
/// Exit 65 when a file is wrong by itself, 78 when a variable disagrees with
/// what it overrides, 64 for a bad CLUSTER_PRIVATEKEY.
pub fn verify(id: &str, id_from: &From, key: &crate::config::Secret, key_from: &From) -> Result<(), Error> {
    let derived = match peer_id_of(key.expose()) {
        Ok(KeyId::Ed25519(d)) => d,
        Ok(KeyId::Other) => return Ok(()),
        Err(why) => {
            return Err(match key_from {
                From::Env(v) => Error::usage(format!("{v} {why}")),
                From::File(p, field) => Error::bad_file(p, format!("{field} {why}")),
            })
        }
    };
    if derived == id {
        return Ok(());
    }
    let msg = format!(
        "{id_from} says the peer ID is {id}, but {key_from} is the key of {derived}: the daemon stops (\"identity ID \
         does not match the private_key\")"
    );
    Err(match (id_from, key_from) {
        (From::File(p, _), From::File(..)) => Error::bad_file(p, msg),
        _ => Error::Unsafe(msg),
    })
}

/// Fields 1 (varint) and 2 (bytes) of a protobuf message.
fn private_key_fields(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut i = 0;
    let (mut key_type, mut data) = (None, None);
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    while i < b.len() {
        let tag = varint(&mut i)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => key_type = Some(varint(&mut i)?),
            (_, 0) => {
                varint(&mut i)?;
            }
            (field, 2) => {
                let len = usize::try_from(varint(&mut i)?).ok()?;
                let v = b.get(i..i.checked_add(len)?)?;
                i += len;
                if field == 2 {
                    data = Some(v);
                }
            }
            _ => return None,
        }
    }
    Some((key_type?, data?))
}

/// Go's base64.StdEncoding.DecodeString: padded, `\r` and `\n` ignored.
fn base64_std(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let chars: Vec<u8> = s.bytes().filter(|c| *c != b'\r' && *c != b'\n').collect();
    if chars.len() % 4 != 0 {
        return None;
    }
    let mut out = Vec::with_capacity(chars.len() / 4 * 3);
    for (n, quad) in chars.chunks(4).enumerate() {
        let last = n + 1 == chars.len() / 4;
        let pad = quad.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut v = 0u32;
        for c in &quad[..4 - pad] {
            v = (v << 6) | val(*c)?;
        }
        v <<= 6 * pad as u32;
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity.json the v1.1.6 daemon's `init` wrote.
    const KEY: &str = "CAESQJ0A5SEHMeL31/6ZD8VhHbv1sv2oebUjHldIjqnXq+v8rnPk9Ql9XmG08d8lzCqSj1ql/H1HzEGSmEf4t09yIz4=";
    const ID: &str = "12D3KooWMZMc67MAecpxVHYSNyJv9EwDFEm5AMyVUuwyq3qBcNpD";

    #[test]
    fn base64_as_go_reads_it() {
        assert_eq!(base64_std("aGk=").unwrap(), b"hi");
        assert_eq!(base64_std("aGk\n=").unwrap(), b"hi");
        assert_eq!(base64_std("aGk").as_deref(), None);
        assert_eq!(base64_std("a=Gk").as_deref(), None);
        assert_eq!(base64_std("").unwrap(), b"");
    }

    #[test]
    fn ed25519_keys_give_their_peer_id() {
        let KeyId::Ed25519(id) = peer_id_of(KEY).unwrap() else {
            panic!()
        };
        assert_eq!(id, ID);
        // The 96-byte form (public key repeated) names the same peer.
        let bytes = base64_std(KEY).unwrap();
        let mut long = vec![0x08, 0x01, 0x12, 96];
        long.extend_from_slice(&bytes[4..68]);
        long.extend_from_slice(&bytes[36..68]);
        let long = b64(&long);
        assert_eq!(peer_id_of(&long).unwrap(), KeyId::Ed25519(id));
    }

    #[test]
    fn other_types_and_bad_keys() {
        assert_eq!(peer_id_of(&b64(&[0x08, 0x00, 0x12, 1, 7])).unwrap(), KeyId::Other);
        assert!(peer_id_of("not base64!").unwrap_err().contains("base64"));
        assert!(peer_id_of(&b64(&[0x08, 0x01, 0x12, 2, 1, 2]))
            .unwrap_err()
            .contains("2 bytes"));
        assert!(peer_id_of(&b64(&[0xff])).unwrap_err().contains("protobuf"));
    }

    fn b64(b: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for chunk in b.chunks(3) {
            let v = chunk
                .iter()
                .enumerate()
                .fold(0u32, |v, (i, c)| v | u32::from(*c) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    s.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }
}
