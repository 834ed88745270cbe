//! The local peer: its identity, its consensus and whether consensus state
//! already exists, read from the config folder. Never writes.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::exit::Error;
use crate::peer::{Consensus, PeerId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalPeer {
    pub config_dir: PathBuf,
    pub peer_id: PeerId,
    pub consensus: Consensus,
    /// The raft folder or the crdt datastore folder.
    pub state_dir: PathBuf,
    pub has_state: bool,
    pub peerstore: PathBuf,
    /// service.json's cluster.secret is empty (and CLUSTER_SECRET does not override it).
    pub secret_empty_in_file: bool,
    /// service.json's api.restapi.http_listen_multiaddress (the first, if a list).
    pub api_listen: Option<String>,
}

pub fn service_json(dir: &Path) -> PathBuf {
    dir.join("service.json")
}

pub fn identity_json(dir: &Path) -> PathBuf {
    dir.join("identity.json")
}

/// Reads a JSON object from `path`, naming the file in every error.
pub fn read_json(path: &Path) -> Result<serde_json::Map<String, Value>, Error> {
    let text = std::fs::read(path).map_err(|source| Error::Unreadable {
        path: path.to_owned(),
        source,
    })?;
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::bad_file(path, "is not a JSON object")),
        Err(e) => Err(Error::bad_file(path, format!("is not valid JSON: {e}"))),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// Reads the peer. `cluster_id_env` is CLUSTER_ID, which the daemon applies over
/// the identity on every start.
pub fn read(config_dir: &Path, cluster_id_env: Option<&str>) -> Result<LocalPeer, Error> {
    let service_path = service_json(config_dir);
    let service = Value::Object(read_json(&service_path)?);

    let consensus = {
        let section = service.get("consensus").and_then(Value::as_object);
        let Some(section) = section else {
            return Err(Error::bad_file(
                &service_path,
                "has no \"consensus\" object (it needs a \"crdt\" or \"raft\" section)",
            ));
        };
        match (section.contains_key("crdt"), section.contains_key("raft")) {
            (true, false) => Consensus::Crdt,
            (false, true) => Consensus::Raft,
            (true, true) => {
                return Err(Error::bad_file(
                    &service_path,
                    "\"consensus\" has both \"crdt\" and \"raft\": the daemon cannot tell which to run",
                ))
            }
            (false, false) => {
                return Err(Error::bad_file(
                    &service_path,
                    "\"consensus\" has neither \"crdt\" nor \"raft\"",
                ))
            }
        }
    };

    let peer_id = match cluster_id_env {
        Some(id) => PeerId::parse(id).map_err(|e| Error::usage(format!("CLUSTER_ID: {e}")))?,
        None => read_peer_id(config_dir, &service)?,
    };

    let state_dir = match consensus {
        Consensus::Raft => match str_at(&service, &["consensus", "raft", "data_folder"]).filter(|s| !s.is_empty()) {
            Some(f) => config_dir.join(f),
            None => config_dir.join("raft"),
        },
        Consensus::Crdt => crdt_datastore_dir(config_dir, &service_path, &service)?,
    };
    let has_state = dir_has_entries(&state_dir)?;

    let peerstore = match str_at(&service, &["cluster", "peerstore_file"]).filter(|s| !s.is_empty()) {
        Some(f) => config_dir.join(f),
        None => config_dir.join("peerstore"),
    };
    let secret_empty_in_file = match ["cluster", "secret"].iter().try_fold(&service, |v, k| v.get(k)) {
        // The daemon reads a null or missing secret as "": an unprotected network.
        None | Some(Value::Null) => true,
        Some(Value::String(s)) if s.is_empty() => true,
        Some(Value::String(s)) => {
            crate::config::check_secret(s)
                .map_err(|why| Error::bad_file(&service_path, format!("cluster.secret {why}")))?;
            false
        }
        Some(_) => {
            return Err(Error::bad_file(
                &service_path,
                "cluster.secret is not a string (64 hex characters)",
            ))
        }
    };
    let api_listen = ["api", "restapi", "http_listen_multiaddress"]
        .iter()
        .try_fold(&service, |v, k| v.get(k))
        .and_then(|v| v.as_str().or_else(|| v.get(0).and_then(Value::as_str)))
        .map(str::to_owned);

    Ok(LocalPeer {
        config_dir: config_dir.to_owned(),
        peer_id,
        consensus,
        state_dir,
        has_state,
        peerstore,
        secret_empty_in_file,
        api_listen,
    })
}

/// identity.json's `id`, else the legacy `cluster.id` of service.json (before v0.11).
fn read_peer_id(dir: &Path, service: &Value) -> Result<PeerId, Error> {
    let identity_path = identity_json(dir);
    let (path, id) = match read_json(&identity_path) {
        Ok(identity) => {
            let id = identity.get("id").and_then(Value::as_str).map(str::to_owned);
            let Some(id) = id else {
                return Err(Error::bad_file(&identity_path, "has no string field \"id\""));
            };
            if identity
                .get("private_key")
                .and_then(Value::as_str)
                .is_none_or(|k| k.is_empty())
            {
                return Err(Error::bad_file(
                    &identity_path,
                    "has no \"private_key\": the daemon refuses such an identity",
                ));
            }
            (identity_path, id)
        }
        Err(Error::Unreadable { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            match str_at(service, &["cluster", "id"]) {
                Some(id) => (service_json(dir), id.to_owned()),
                None => {
                    return Err(Error::bad_file(
                        &identity_path,
                        "does not exist and service.json has no legacy \"cluster.id\": the peer has no identity",
                    ))
                }
            }
        }
        Err(e) => return Err(e),
    };
    PeerId::parse(&id).map_err(|e| Error::bad_file(path, format!("field \"id\": {e}")))
}

/// The crdt datastore folder: the one `datastore` section's `folder`, or its default name.
fn crdt_datastore_dir(dir: &Path, path: &Path, service: &Value) -> Result<PathBuf, Error> {
    let Some(section) = service.get("datastore").and_then(Value::as_object) else {
        return Ok(dir.join("pebble"));
    };
    let kinds: Vec<&String> = section.keys().collect();
    match kinds.as_slice() {
        [] => Ok(dir.join("pebble")),
        [kind] => {
            let folder = section[kind.as_str()]
                .get("folder")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            Ok(dir.join(folder.unwrap_or(kind)))
        }
        _ => Err(Error::bad_file(
            path,
            "\"datastore\" has more than one section: crdt needs exactly one",
        )),
    }
}

fn dir_has_entries(dir: &Path) -> Result<bool, Error> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(Error::Unreadable {
            path: dir.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::tests::IDS;

    fn dir_with(service: &str, identity: Option<&str>) -> tempdir::Dir {
        let d = tempdir::Dir::new();
        std::fs::write(d.path().join("service.json"), service).unwrap();
        if let Some(i) = identity {
            std::fs::write(d.path().join("identity.json"), i).unwrap();
        }
        d
    }

    fn identity(id: &str) -> String {
        format!(r#"{{"id": "{id}", "private_key": "CAESQ..."}}"#)
    }

    #[test]
    fn a_malformed_secret_names_the_field_and_never_its_value() {
        for (secret, says) in [
            ("\"ab\"", "cluster.secret has 2 hex characters"),
            (
                "\"zz-not-hex\"",
                "cluster.secret holds a character that is not hexadecimal",
            ),
            ("42", "cluster.secret is not a string"),
        ] {
            let d = dir_with(
                &format!(r#"{{"cluster":{{"secret":{secret}}},"consensus":{{"crdt":{{}}}}}}"#),
                Some(&identity(IDS[0])),
            );
            let e = read(d.path(), None).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("service.json"), "{e}");
            assert!(!e.contains("zz-not-hex"), "{e}");
        }
    }

    #[test]
    fn reads_crdt_peer_and_state() {
        let d = dir_with(
            r#"{"cluster":{"secret":"2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed"},"consensus":{"crdt":{}},"datastore":{"pebble":{}}}"#,
            Some(&identity(IDS[0])),
        );
        let p = read(d.path(), None).unwrap();
        assert_eq!(
            (p.peer_id.as_str(), p.consensus, p.has_state),
            (IDS[0], Consensus::Crdt, false)
        );
        std::fs::create_dir(d.path().join("pebble")).unwrap();
        assert!(!read(d.path(), None).unwrap().has_state, "an empty folder is no state");
        std::fs::write(d.path().join("pebble/000001.log"), "x").unwrap();
        assert!(read(d.path(), None).unwrap().has_state);
    }

    #[test]
    fn reads_raft_data_folder_and_legacy_identity() {
        let svc = format!(
            r#"{{"cluster":{{"id":"{}"}},"consensus":{{"raft":{{"data_folder":"r"}}}}}}"#,
            IDS[1]
        );
        let d = dir_with(&svc, None);
        std::fs::create_dir_all(d.path().join("r/snapshots")).unwrap();
        let p = read(d.path(), None).unwrap();
        assert_eq!(
            (p.peer_id.as_str(), p.consensus, p.has_state),
            (IDS[1], Consensus::Raft, true)
        );
        assert_eq!(p.peerstore, d.path().join("peerstore"));
    }

    #[test]
    fn cluster_id_env_wins() {
        let d = dir_with(r#"{"consensus":{"crdt":{}}}"#, Some(&identity(IDS[0])));
        assert_eq!(read(d.path(), Some(IDS[2])).unwrap().peer_id.as_str(), IDS[2]);
    }

    #[test]
    fn bad_files_name_file_and_field() {
        for (svc, ident, needle) in [
            ("{", None, "service.json: is not valid JSON"),
            ("[]", None, "service.json: is not a JSON object"),
            (r#"{"consensus":{}}"#, None, "neither \"crdt\" nor \"raft\""),
            (r#"{"consensus":{"crdt":{},"raft":{}}}"#, None, "both"),
            (r#"{"consensus":{"crdt":{}}}"#, None, "identity.json: does not exist"),
            (
                r#"{"consensus":{"crdt":{}}}"#,
                Some(r#"{"id": 5}"#),
                "identity.json: has no string field \"id\"",
            ),
            (
                r#"{"consensus":{"crdt":{}}}"#,
                Some(r#"{"id": "x", "private_key": "k"}"#),
                "identity.json: field \"id\"",
            ),
            (
                r#"{"consensus":{"crdt":{}}}"#,
                Some(r#"{"id": "12D3KooW"#),
                "identity.json: is not valid JSON",
            ),
        ] {
            let d = dir_with(svc, ident);
            let e = read(d.path(), None).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
            assert_eq!(e.exit_code(), crate::exit::code::DATAERR);
        }
    }

    #[test]
    fn missing_folder_is_unreadable() {
        let e = read(Path::new("/nonexistent/ipfs-cluster"), None).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::code::NOINPUT);
        assert!(e.to_string().contains("/nonexistent/ipfs-cluster/service.json"));
    }
}

#[cfg(test)]
pub(crate) mod tempdir {
    //! A temporary folder removed on drop (tests only).
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new() -> Dir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "icb-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
