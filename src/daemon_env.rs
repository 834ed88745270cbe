//! ipfs-cluster's own settings that this tool reads too, parsed exactly as
//! the v1.1.6 daemon parses them, so that what the daemon would refuse is
//! refused here first, before any file changes: the cluster secret
//! (cluster_config.go `DecodeClusterSecret`: Go hex, no trimming, 0 or 32
//! bytes), envconfig v1.4.0's map and slice syntax (`processField`: items
//! split on `,`, a map item on `:` into exactly two; a set-but-empty value
//! is an empty map or slice), the REST API's credentials (api/common: an
//! empty map is invalid, an empty user or password never matches), and the
//! cluster listen addresses. Pure; messages never repeat a secret.

use crate::config::{Credentials, Secret};

/// A cluster secret as `DecodeClusterSecret` takes it; the empty secret
/// (an unprotected network) is `Ok(false)`.
pub fn check_secret(hex: &str) -> Result<bool, String> {
    if hex.is_empty() {
        return Ok(false);
    }
    if let Some(c) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
        let what = match c {
            '\n' | '\r' => "a line break".to_string(),
            c if c.is_whitespace() => "white space".to_string(),
            _ => "a character that is not hexadecimal".to_string(),
        };
        return Err(format!(
            "holds {what}: the daemon decodes it as hex with no trimming and would stop; it must be 64 hex \
             characters (32 bytes), the same on every peer"
        ));
    }
    if hex.len() != 64 {
        return Err(format!(
            "has {} hex characters: it must have 64 (32 bytes), the same on every peer",
            hex.len()
        ));
    }
    Ok(true)
}

/// The bytes of a secret that [`check_secret`] accepts (empty for the empty
/// secret); None for one it refuses.
pub fn secret_bytes(hex: &str) -> Option<Vec<u8>> {
    check_secret(hex).ok()?;
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect()
}

/// CLUSTER_RESTAPI_BASICAUTHCREDENTIALS as envconfig fills the daemon's map;
/// the credentials the probes use (the first user, with the password the map
/// keeps for it: a later duplicate wins).
pub fn basic_auth(value: &str) -> Result<Credentials, String> {
    const VAR: &str = "CLUSTER_RESTAPI_BASICAUTHCREDENTIALS";
    if value.trim().is_empty() {
        return Err(format!(
            "{VAR} is set but empty: the daemon reads it as an empty map and stops \
             (\"basic_auth_creds should be null or have at least one entry\"); unset it for no authentication"
        ));
    }
    let mut pairs: Vec<(&str, &str)> = vec![];
    for (n, item) in value.split(',').enumerate() {
        let parts: Vec<&str> = item.split(':').collect();
        let [user, password] = parts[..] else {
            return Err(format!(
                "{VAR}: item {} has {} ':'-separated parts: each item must be user:password, and neither may hold \
                 ',' or ':' (the daemon stops with \"invalid map item\")",
                n + 1,
                parts.len()
            ));
        };
        if user.is_empty() || password.is_empty() {
            return Err(format!(
                "{VAR}: item {} has an empty {}: the daemon refuses it at every request",
                n + 1,
                if user.is_empty() { "user" } else { "password" }
            ));
        }
        pairs.push((user, password));
    }
    let user = pairs[0].0;
    let password = pairs
        .iter()
        .rev()
        .find(|(u, _)| *u == user)
        .map(|(_, p)| *p)
        .unwrap_or_default();
    Ok(Credentials {
        user: user.to_owned(),
        password: Secret::new(password),
    })
}

/// The TCP port the daemon listens on for peers, from its listen addresses
/// (CLUSTER_LISTENMULTIADDRESS split on `,`, or service.json's
/// `cluster.listen_multiaddress`): the first `/ip4|ip6|dns*/HOST/tcp/PORT`.
pub fn listen_port(addrs: &[String]) -> Result<u16, String> {
    if addrs.is_empty() {
        return Err("is empty: the daemon stops (\"cluster.listen_multiaddress is undefined\")".into());
    }
    for a in addrs {
        if let Ok(crate::peer::Multiaddr {
            tcp_port: Some(port), ..
        }) = crate::peer::Multiaddr::parse(a)
        {
            return match port.parse::<u16>() {
                Ok(0) => Err(format!(
                    "{a:?} listens on a random port (tcp/0): peers could not know where to dial"
                )),
                Ok(p) => Ok(p),
                Err(_) => Err(format!("{a:?} has no valid TCP port")),
            };
        }
        if !a.starts_with('/') {
            return Err(format!("{a:?} is not a multiaddr (the daemon stops)"));
        }
    }
    Err(format!(
        "{addrs:?} has no TCP address: peers dial /ip4/IP/tcp/PORT, and this tool probes the cluster port over TCP"
    ))
}

/// CLUSTER_LISTENMULTIADDRESS as envconfig splits a slice.
pub fn env_list(value: &str) -> Vec<String> {
    if value.trim().is_empty() {
        return vec![];
    }
    value.split(',').map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed";

    #[test]
    fn secrets_as_go_hex_decodes_them() {
        assert_eq!(check_secret(S), Ok(true));
        assert_eq!(check_secret(&S.to_uppercase()), Ok(true), "hex letters in either case");
        assert_eq!(check_secret(""), Ok(false));
        for (bad, says) in [
            (format!("{S}\n"), "a line break"),
            (format!(" {S}"), "white space"),
            ("zz".repeat(32), "not hexadecimal"),
            (S[..62].to_string(), "has 62 hex characters"),
            (format!("{S}0"), "has 65 hex characters"),
        ] {
            let e = check_secret(&bad).unwrap_err();
            assert!(e.contains(says) && !e.contains(S), "{e}");
        }
    }

    #[test]
    fn credentials_as_envconfig_splits_them() {
        let c = basic_auth("admin:s3cret,other:x").unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("admin", "s3cret"));
        let c = basic_auth("admin:a,admin:b").unwrap();
        assert_eq!(c.password.expose(), "b", "the map keeps the last");
        for (bad, says) in [
            ("", "set but empty"),
            (" ", "set but empty"),
            ("admin", "item 1 has 1 ':'-separated parts"),
            ("admin:pa:ss", "item 1 has 3"),
            ("a:b,", "item 2 has 1"),
            ("admin:", "empty password"),
            (":pw", "empty user"),
        ] {
            let e = basic_auth(bad).unwrap_err();
            assert!(e.contains(says) && !e.contains("pa:ss"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn listen_ports() {
        let l = |s: &str| env_list(s);
        assert_eq!(
            listen_port(&l("/ip4/0.0.0.0/tcp/9096,/ip4/0.0.0.0/udp/9096/quic")),
            Ok(9096)
        );
        assert_eq!(listen_port(&l("/ip4/0.0.0.0/udp/9096/quic,/ip6/::/tcp/9196")), Ok(9196));
        assert!(listen_port(&l("")).unwrap_err().contains("undefined"));
        assert!(listen_port(&l("/ip4/0.0.0.0/udp/9096/quic"))
            .unwrap_err()
            .contains("no TCP"));
        assert!(listen_port(&l("/ip4/0.0.0.0/tcp/0"))
            .unwrap_err()
            .contains("random port"));
    }
}
