//! The local peer: its identity, its consensus and whether consensus state
//! already exists, read from the config folder. Never writes.
//!
//! Every path is resolved as ipfs-cluster v1.1.6 resolves it, with the
//! CLUSTER_* overrides `config` read (`Paths`): a relative raft data_folder
//! is relative to the working directory, a relative datastore folder to the
//! config folder, and the peerstore file is always joined under the config
//! folder (Go's filepath.Join, even when absolute).

use std::path::{Component, Path, PathBuf};

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
    /// The genesis record's hash of service.json's cluster.secret (never the secret).
    pub secret_sha256_in_file: String,
    /// service.json's api.restapi.http_listen_multiaddress (the first, if a list).
    pub api_listen: Option<String>,
}

/// The daemon's CLUSTER_* variables that move its files, each only if set and
/// non-empty (envconfig v1.4.0 sets a set-but-empty value, but the daemon's
/// `SetIfNotDefault` then keeps service.json's), and the working directory the
/// daemon will inherit. Filled in by `config`, the only reader of the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    /// CLUSTER_RAFT_DATAFOLDER, over consensus.raft.data_folder.
    pub raft_data_folder: Option<String>,
    /// CLUSTER_PEBBLE_FOLDER, CLUSTER_BADGER_FOLDER, CLUSTER_BADGER3_FOLDER,
    /// CLUSTER_LEVELDB_FOLDER by datastore name, over datastore.NAME.folder.
    pub datastore_folders: Vec<(String, String)>,
    /// CLUSTER_PEERSTOREFILE, over cluster.peerstore_file.
    pub peerstore_file: Option<String>,
    /// std::env::current_dir() when the config was read (empty if unknown:
    /// relative paths then stay relative, which the OS resolves the same way).
    pub cwd: PathBuf,
}

impl Paths {
    fn datastore_folder(&self, kind: &str) -> Option<&str> {
        self.datastore_folders
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, f)| f.as_str())
    }
}

/// Go's `filepath.Join(base, name)`: joined, then cleaned lexically, so an
/// absolute `name` lands under `base` and `..` removes the element before it.
pub fn go_join(base: &Path, name: &str) -> PathBuf {
    let mut out: Vec<Component> = vec![];
    for c in base.components().chain(Path::new(name).components()) {
        match c {
            Component::RootDir if !out.is_empty() => {}
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(c),
            },
            c => out.push(c),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
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

/// What the health check needs: the peer ID and the REST API address. It does
/// not look at the state, which the running daemon is writing meanwhile.
pub fn read_identity(config_dir: &Path, cluster_id_env: Option<&str>) -> Result<(PeerId, Option<String>), Error> {
    let service = Value::Object(read_json(&service_json(config_dir))?);
    let peer_id = match cluster_id_env {
        Some(id) => PeerId::parse(id).map_err(|e| Error::usage(format!("CLUSTER_ID: {e}")))?,
        None => read_peer_id(config_dir, &service)?,
    };
    Ok((peer_id, api_listen(&service)))
}

/// service.json's api.restapi.http_listen_multiaddress (the first, if a list).
fn api_listen(service: &Value) -> Option<String> {
    ["api", "restapi", "http_listen_multiaddress"]
        .iter()
        .try_fold(service, |v, k| v.get(k))
        .and_then(|v| v.as_str().or_else(|| v.get(0).and_then(Value::as_str)))
        .map(str::to_owned)
}

/// Reads the peer. `cluster_id_env` is CLUSTER_ID, which the daemon applies over
/// the identity on every start.
pub fn read(config_dir: &Path, cluster_id_env: Option<&str>, paths: &Paths) -> Result<LocalPeer, Error> {
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

    let (state_dir, has_state) = match consensus {
        // raft config.go GetDataFolder: data_folder as is (relative to the
        // working directory), else <config>/raft; state as HasExistingState.
        Consensus::Raft => {
            let folder = paths.raft_data_folder.as_deref();
            let folder = folder.or(str_at(&service, &["consensus", "raft", "data_folder"]).filter(|s| !s.is_empty()));
            let dir = match folder {
                Some(f) => paths.cwd.join(f),
                None => go_join(config_dir, "raft"),
            };
            let has_state = crate::raftstate::has_raft_state(&dir)?;
            (dir, has_state)
        }
        // crdt: the daemon has no notion of founding (no bootstrap of a
        // peerset, nothing like HasExistingState): every start merges with
        // the peers it reaches, so starting early on a folder that turns out
        // to hold little cannot split the cluster for good. A datastore
        // folder with entries is taken as state (rule 1 then starts it with
        // --bootstrap to the live peers).
        Consensus::Crdt => {
            let dir = crdt_datastore_dir(config_dir, &service_path, &service, paths)?;
            let has_state = dir_has_entries(&dir)?;
            (dir, has_state)
        }
    };

    // cluster_config.go GetPeerstorePath: always filepath.Join(BaseDir, file).
    let peerstore_file = paths.peerstore_file.as_deref();
    let peerstore_file = peerstore_file.or(str_at(&service, &["cluster", "peerstore_file"]).filter(|s| !s.is_empty()));
    let peerstore = go_join(config_dir, peerstore_file.unwrap_or("peerstore"));
    let secret_in_file = ["cluster", "secret"].iter().try_fold(&service, |v, k| v.get(k));
    let secret_sha256_in_file = crate::genesis::secret_hash(
        &secret_in_file
            .and_then(Value::as_str)
            .and_then(crate::daemon_env::secret_bytes)
            .unwrap_or_default(),
    );
    let secret_empty_in_file = match secret_in_file {
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
    let api_listen = api_listen(&service);

    Ok(LocalPeer {
        config_dir: config_dir.to_owned(),
        peer_id,
        consensus,
        state_dir,
        has_state,
        peerstore,
        secret_empty_in_file,
        secret_sha256_in_file,
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

/// The crdt datastore folder: CLUSTER_<NAME>_FOLDER, else the one `datastore`
/// section's `folder`, else its default (the section's name). Each datastore's
/// config.go GetFolder: an absolute folder as is, else joined under the config folder.
fn crdt_datastore_dir(dir: &Path, path: &Path, service: &Value, paths: &Paths) -> Result<PathBuf, Error> {
    let resolve = |kind: &str, folder: Option<&str>| {
        let folder = paths.datastore_folder(kind).or(folder).unwrap_or(kind);
        if Path::new(folder).is_absolute() {
            PathBuf::from(folder)
        } else {
            go_join(dir, folder)
        }
    };
    let Some(section) = service.get("datastore").and_then(Value::as_object) else {
        return Ok(resolve("pebble", None));
    };
    let kinds: Vec<&String> = section.keys().collect();
    match kinds.as_slice() {
        [] => Ok(resolve("pebble", None)),
        [kind] => {
            let folder = section[kind.as_str()]
                .get("folder")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            Ok(resolve(kind, folder))
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
            let e = read(d.path(), None, &Paths::default()).unwrap_err().to_string();
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
        let p = read(d.path(), None, &Paths::default()).unwrap();
        assert_eq!(
            (p.peer_id.as_str(), p.consensus, p.has_state),
            (IDS[0], Consensus::Crdt, false)
        );
        std::fs::create_dir(d.path().join("pebble")).unwrap();
        assert!(
            !read(d.path(), None, &Paths::default()).unwrap().has_state,
            "an empty folder is no state"
        );
        std::fs::write(d.path().join("pebble/000001.log"), "x").unwrap();
        assert!(read(d.path(), None, &Paths::default()).unwrap().has_state);
    }

    #[test]
    fn reads_raft_data_folder_and_legacy_identity() {
        let svc = format!(
            r#"{{"cluster":{{"id":"{}"}},"consensus":{{"raft":{{"data_folder":"r"}}}}}}"#,
            IDS[1]
        );
        let d = dir_with(&svc, None);
        let paths = Paths {
            cwd: d.path().to_owned(),
            ..Paths::default()
        };
        raft_fixture("has-log", &d.path().join("r"));
        let p = read(d.path(), None, &paths).unwrap();
        assert_eq!(
            (p.peer_id.as_str(), p.consensus, p.has_state),
            (IDS[1], Consensus::Raft, true)
        );
        assert_eq!(p.peerstore, d.path().join("peerstore"));
    }

    /// Copies a raft folder made by the real daemon (tests/fixtures/raft) to `to`.
    fn raft_fixture(name: &str, to: &Path) {
        let from = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/raft")
            .join(name);
        std::fs::create_dir_all(to.join("snapshots")).unwrap();
        std::fs::copy(from.join("raft.db"), to.join("raft.db")).unwrap();
        if let Ok(snaps) = std::fs::read_dir(from.join("snapshots")) {
            for s in snaps {
                let s = s.unwrap();
                std::fs::create_dir_all(to.join("snapshots").join(s.file_name())).unwrap();
                for f in std::fs::read_dir(s.path()).unwrap() {
                    let f = f.unwrap();
                    std::fs::copy(f.path(), to.join("snapshots").join(s.file_name()).join(f.file_name())).unwrap();
                }
            }
        }
    }

    fn raft_peer() -> tempdir::Dir {
        dir_with(r#"{"consensus":{"raft":{"init_peerset":[]}}}"#, Some(&identity(IDS[0])))
    }

    /// The split brain: a raft joiner whose join failed keeps a raft folder
    /// (raft.db, snapshots/) with no raft state. Started as if it had state
    /// (no --bootstrap, empty init_peerset), the real daemon founds a
    /// one-voter cluster of itself.
    #[test]
    fn a_failed_join_leaves_a_raft_folder_but_no_state() {
        let d = raft_peer();
        raft_fixture("failed-join", &d.path().join("raft"));
        let p = read(d.path(), None, &Paths::default()).unwrap();
        assert_eq!((p.state_dir.clone(), p.has_state), (d.path().join("raft"), false));
        for state in ["has-log", "many-logs", "snapshot-only"] {
            let d = raft_peer();
            raft_fixture(state, &d.path().join("raft"));
            assert!(read(d.path(), None, &Paths::default()).unwrap().has_state, "{state}");
        }
    }

    #[test]
    fn a_raft_db_we_cannot_read_stops_the_run() {
        let d = raft_peer();
        raft_fixture("garbage", &d.path().join("raft"));
        let e = read(d.path(), None, &Paths::default()).unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::code::DATAERR);
        let text = e.to_string();
        assert!(text.contains("raft/raft.db") && text.contains("cannot tell"), "{text}");
    }

    /// raft config.go GetDataFolder: CLUSTER_RAFT_DATAFOLDER over data_folder,
    /// either taken as is, so a relative one is relative to the working directory.
    #[test]
    fn raft_data_folder_is_relative_to_the_working_directory() {
        let d = dir_with(
            r#"{"consensus":{"raft":{"data_folder":"from-json"}}}"#,
            Some(&identity(IDS[0])),
        );
        let cwd = d.path().join("cwd");
        raft_fixture("has-log", &cwd.join("from-json"));
        raft_fixture("failed-join", &d.path().join("from-json")); // under the config folder: not used
        let mut paths = Paths {
            cwd: cwd.clone(),
            ..Paths::default()
        };
        let p = read(d.path(), None, &paths).unwrap();
        assert_eq!((p.state_dir, p.has_state), (cwd.join("from-json"), true));

        paths.raft_data_folder = Some("from-env".into());
        raft_fixture("failed-join", &cwd.join("from-env"));
        let p = read(d.path(), None, &paths).unwrap();
        assert_eq!((p.state_dir, p.has_state), (cwd.join("from-env"), false));

        let abs = d.path().join("abs");
        paths.raft_data_folder = Some(abs.to_str().unwrap().into());
        raft_fixture("many-logs", &abs);
        let p = read(d.path(), None, &paths).unwrap();
        assert_eq!((p.state_dir, p.has_state), (abs, true));
    }

    /// Each datastore's config.go GetFolder: CLUSTER_<NAME>_FOLDER over folder;
    /// absolute as is, relative under the config folder (not the working directory).
    #[test]
    fn crdt_datastore_folder_overrides() {
        let d = dir_with(
            r#"{"consensus":{"crdt":{}},"datastore":{"badger":{"folder":"json"}}}"#,
            Some(&identity(IDS[0])),
        );
        let mut paths = Paths {
            cwd: PathBuf::from("/elsewhere"),
            ..Paths::default()
        };
        let dir = |paths: &Paths| read(d.path(), None, paths).unwrap().state_dir;
        assert_eq!(dir(&paths), d.path().join("json"));
        paths.datastore_folders = vec![("pebble".into(), "not-this-one".into())];
        assert_eq!(dir(&paths), d.path().join("json"), "only the datastore in use");
        paths.datastore_folders.push(("badger".into(), "../env".into()));
        assert_eq!(dir(&paths), d.path().parent().unwrap().join("env"));
        paths.datastore_folders[1].1 = "/data/badger".into();
        assert_eq!(dir(&paths), PathBuf::from("/data/badger"));
        for kind in ["pebble", "badger3", "leveldb"] {
            let d = dir_with(
                &format!(r#"{{"consensus":{{"crdt":{{}}}},"datastore":{{"{kind}":{{}}}}}}"#),
                Some(&identity(IDS[0])),
            );
            let paths = Paths {
                datastore_folders: vec![(kind.into(), "x".into())],
                ..Paths::default()
            };
            assert_eq!(
                read(d.path(), None, &Paths::default()).unwrap().state_dir,
                d.path().join(kind)
            );
            assert_eq!(read(d.path(), None, &paths).unwrap().state_dir, d.path().join("x"));
        }
    }

    /// cluster_config.go GetPeerstorePath: filepath.Join(BaseDir, file), also
    /// for an absolute file; CLUSTER_PEERSTOREFILE over peerstore_file.
    #[test]
    fn peerstore_file_is_always_under_the_config_folder() {
        let d = dir_with(
            r#"{"cluster":{"peerstore_file":"/abs/ps"},"consensus":{"crdt":{}}}"#,
            Some(&identity(IDS[0])),
        );
        let mut paths = Paths::default();
        assert_eq!(read(d.path(), None, &paths).unwrap().peerstore, d.path().join("abs/ps"));
        paths.peerstore_file = Some("../env-ps".into());
        let want = d.path().parent().unwrap().join("env-ps");
        assert_eq!(read(d.path(), None, &paths).unwrap().peerstore, want);
    }

    #[test]
    fn go_join_cleans_as_filepath_join() {
        for (base, name, want) in [
            ("/cfg", "peerstore", "/cfg/peerstore"),
            ("/cfg", "/abs/ps", "/cfg/abs/ps"),
            ("/cfg/", "./a//b/", "/cfg/a/b"),
            ("/cfg", "../x", "/x"),
            ("/", "../../x", "/x"),
            ("cfg", "../../x", "../x"),
            ("", "x", "x"),
            ("cfg", "..", "."),
        ] {
            assert_eq!(go_join(Path::new(base), name), PathBuf::from(want), "{base} + {name}");
        }
    }

    #[test]
    fn cluster_id_env_wins() {
        let d = dir_with(r#"{"consensus":{"crdt":{}}}"#, Some(&identity(IDS[0])));
        assert_eq!(
            read(d.path(), Some(IDS[2]), &Paths::default())
                .unwrap()
                .peer_id
                .as_str(),
            IDS[2]
        );
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
            let e = read(d.path(), None, &Paths::default()).unwrap_err();
            assert!(e.to_string().contains(needle), "{e} lacks {needle}");
            assert_eq!(e.exit_code(), crate::exit::code::DATAERR);
        }
    }

    #[test]
    fn missing_folder_is_unreadable() {
        let e = read(Path::new("/nonexistent/ipfs-cluster"), None, &Paths::default()).unwrap_err();
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
