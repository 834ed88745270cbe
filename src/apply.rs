//! Applying a decision to disk: the peerstore and service.json's
//! `consensus.raft.init_peerset`, each written atomically (temp file, fsync,
//! rename) keeping the file's mode, owner, key order and every other field; and
//! the daemon's argv. Never decides, never touches identity.json.

use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::decide::Action;
use crate::exit::Error;
use crate::peer::{PeerAddr, PeerId};

/// Mode of files this tool creates (the peerstore when init did not).
pub const NEW_FILE_MODE: u32 = 0o600;

/// The peerstore's text: one multiaddr per line, first line first priority.
pub fn peerstore_text(addrs: &[PeerAddr]) -> String {
    addrs.iter().map(|a| format!("{a}\n")).collect()
}

/// Writes `contents` to `path` atomically, unless it already holds exactly that.
/// Keeps an existing file's mode and owner; a new file gets NEW_FILE_MODE and
/// the owner of its folder (the daemon's user, when we run as root). On error
/// the old file is untouched and no temp file is left. Returns whether it wrote.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<bool, Error> {
    let werr = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let existing = match fs::metadata(path) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(werr(e)),
    };
    if existing.is_some() && fs::read(path).map_err(werr)? == contents {
        return Ok(false);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (mode, uid, gid) = match &existing {
        Some(m) => (m.permissions().mode() & 0o7777, m.uid(), m.gid()),
        None => {
            let d = fs::metadata(dir).map_err(werr)?;
            (NEW_FILE_MODE, d.uid(), d.gid())
        }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A random part as well as the PID: a kill can leave a temp file behind,
    // and container PIDs repeat (the next start has the same PID 1 or 7).
    let mut tmp = PathBuf::new();
    let mut opened = None;
    for _ in 0..4 {
        tmp = dir.join(format!(
            ".{name}.bootstrap-{}-{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        ));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            other => {
                opened = Some(other);
                break;
            }
        }
    }
    let opened = opened.unwrap_or_else(|| Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists)));
    let result = (|| -> std::io::Result<()> {
        let mut f = opened?;
        f.write_all(contents)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(werr(e));
    }
    Ok(true)
}

/// Sets `consensus.raft.init_peerset` in service.json, keeping everything else
/// as it was. Returns whether the file changed.
pub fn set_init_peerset(service_json: &Path, set: &[PeerId]) -> Result<bool, Error> {
    let text = fs::read(service_json).map_err(|source| Error::Unreadable {
        path: service_json.to_owned(),
        source,
    })?;
    let mut doc: Value =
        serde_json::from_slice(&text).map_err(|e| Error::bad_file(service_json, format!("is not valid JSON: {e}")))?;
    let Some(raft) = doc
        .get_mut("consensus")
        .and_then(|c| c.get_mut("raft"))
        .and_then(Value::as_object_mut)
    else {
        return Err(Error::bad_file(
            service_json,
            "has no \"consensus.raft\" object to set init_peerset in",
        ));
    };
    let want = Value::Array(set.iter().map(|p| Value::String(p.to_string())).collect());
    if raft.get("init_peerset") == Some(&want) {
        return Ok(false);
    }
    raft.insert("init_peerset".into(), want);
    let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| Error::bad_file(service_json, e.to_string()))?;
    if text.ends_with(b"\n") {
        out.push(b'\n');
    }
    write_atomic(service_json, &out)
}

/// `<bin> daemon [--bootstrap a,b] DAEMON_ARGS…`.
pub fn daemon_argv(bin: &Path, action: &Action, daemon_args: &[String]) -> Vec<OsString> {
    let mut argv: Vec<OsString> = vec![bin.into(), "daemon".into()];
    let bootstrap = match action {
        Action::Start { bootstrap } | Action::Join { bootstrap } => bootstrap.as_slice(),
        Action::Found { .. } | Action::Wait => &[],
    };
    if !bootstrap.is_empty() {
        argv.push("--bootstrap".into());
        argv.push(
            bootstrap
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
                .into(),
        );
    }
    argv.extend(daemon_args.iter().map(OsString::from));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::tempdir::Dir;
    use crate::peer::tests::IDS;

    fn addr(i: usize) -> PeerAddr {
        PeerAddr {
            ip: format!("127.0.0.{}", i + 2).parse().unwrap(),
            port: 9096,
            peer_id: PeerId::parse(IDS[i]).unwrap(),
        }
    }

    #[test]
    fn peerstore_lines() {
        assert_eq!(
            peerstore_text(&[addr(0), addr(1)]),
            format!("{}\n{}\n", addr(0), addr(1))
        );
        assert_eq!(peerstore_text(&[]), "");
    }

    #[test]
    fn atomic_write_keeps_mode_and_skips_identical() {
        let d = Dir::new();
        let p = d.path().join("peerstore");
        assert!(write_atomic(&p, b"a\n").unwrap());
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(!write_atomic(&p, b"a\n").unwrap());
        assert!(write_atomic(&p, b"b\n").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"b\n");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn a_temp_file_left_by_a_killed_run_with_the_same_pid_is_no_obstacle() {
        let d = Dir::new();
        let p = d.path().join("peerstore");
        // What the old naming left when a run was killed between create and rename.
        let old = d
            .path()
            .join(format!(".peerstore.bootstrap-{}.tmp", std::process::id()));
        fs::write(&old, b"half").unwrap();
        assert!(write_atomic(&p, b"a\n").unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"a\n");
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let e = write_atomic(Path::new("/nonexistent-dir/peerstore"), b"x").unwrap_err();
        assert_eq!(e.exit_code(), crate::exit::code::CANTCREAT);
    }

    #[test]
    fn init_peerset_keeps_order_and_other_fields() {
        let d = Dir::new();
        let p = d.path().join("service.json");
        let orig = "{\n  \"cluster\": {\n    \"secret\": \"x\",\n    \"a\": 1\n  },\n  \"consensus\": {\n    \"raft\": {\n      \"wait_for_leader_timeout\": \"15s\",\n      \"init_peerset\": []\n    }\n  },\n  \"api\": {}\n}\n";
        fs::write(&p, orig).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        let set = vec![PeerId::parse(IDS[0]).unwrap(), PeerId::parse(IDS[1]).unwrap()];
        assert!(set_init_peerset(&p, &set).unwrap());
        let got = fs::read_to_string(&p).unwrap();
        assert_eq!(
            got,
            orig.replace(
                "\"init_peerset\": []",
                &format!(
                    "\"init_peerset\": [\n        \"{}\",\n        \"{}\"\n      ]",
                    IDS[0], IDS[1]
                )
            )
        );
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        assert!(!set_init_peerset(&p, &set).unwrap(), "unchanged the second time");
    }

    #[test]
    fn init_peerset_on_bad_file_changes_nothing() {
        let d = Dir::new();
        let p = d.path().join("service.json");
        for bad in ["{", r#"{"consensus":{"crdt":{}}}"#] {
            fs::write(&p, bad).unwrap();
            assert!(set_init_peerset(&p, &[]).is_err());
            assert_eq!(fs::read_to_string(&p).unwrap(), bad);
        }
    }

    #[test]
    fn argv() {
        let bin = Path::new("ipfs-cluster-service");
        let join = Action::Join {
            bootstrap: vec![addr(0), addr(1)],
        };
        let argv = daemon_argv(bin, &join, &["--stats".into()]);
        assert_eq!(
            argv,
            vec![
                OsString::from("ipfs-cluster-service"),
                "daemon".into(),
                "--bootstrap".into(),
                format!("{},{}", addr(0), addr(1)).into(),
                "--stats".into()
            ]
        );
        let found = Action::Found { init_peerset: None };
        assert_eq!(
            daemon_argv(bin, &found, &[]),
            vec![OsString::from("ipfs-cluster-service"), "daemon".into()]
        );
    }
}
