//! The genesis record: `STATE_ROOT/genesis.json` says that a cluster was
//! founded on this state root, by whom, when, with which consensus and which
//! secret. It is created once, with exactly one winner, before a founding;
//! after it exists only the peers it names may found (`decide`), so a second
//! founding is impossible whatever the registry's delays.
//!
//! NFSv4.1 (EFS) makes an exclusive create unreliable for this (the file is
//! visible empty before it is written, and two clients can both be told they
//! created it), so the record is written to a temporary file with a nonce,
//! fsynced, `link()`ed to its name, and read back: the winner is the one whose
//! nonce is there, whatever `link()` returned. Exactly one winner rests on
//! `link()`, which the server decides; reading is by opening the file, never
//! a `stat()`, but even an `open()` can be answered from a cached "no such
//! file" for a while, so absence only ever leads to a `link()` attempt.
//!
//! `--refound ID` replaces record ID by linking `genesis-after-ID.json`: the
//! records form a chain that only grows, each link with one winner. The
//! current record is the last one of the chain.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::exit::Error;
use crate::peer::{Consensus, PeerId};

/// The record as stored. `founders` and `consensus` are checked when read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub version: u32,
    /// What users name the record by (`--refound ID`): 16 hex characters.
    pub id: String,
    /// The id and the founding task: whoever finds its own nonce in the file won.
    pub nonce: String,
    pub consensus: String,
    pub founders: Vec<String>,
    /// SHA-256 of the cluster secret's bytes (with a fixed prefix): peers with
    /// another secret refuse to start. Never the secret itself.
    pub secret_sha256: String,
    /// RFC 3339, UTC, from the founder's clock.
    pub founded_at: String,
    pub founded_by: String,
    /// The id of the record this one replaced (`--refound`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<String>,
}

/// A record as `decide` and the messages use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Genesis {
    pub id: String,
    pub consensus: Consensus,
    pub founders: Vec<PeerId>,
    pub founded_at: String,
    pub secret_sha256: String,
    /// The file it was read from.
    pub path: PathBuf,
}

/// The outcome of [`create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// This run's record is the one in place.
    Won(Genesis),
    /// Another record is in place (another founder's, or one written earlier).
    Lost(Genesis),
}

const VERSION: u32 = 1;
const FIRST: &str = "genesis.json";
/// A chain longer than this is not a chain of refoundings but a broken folder.
const MAX_CHAIN: usize = 1000;

fn successor(root: &Path, id: &str) -> PathBuf {
    root.join(format!("genesis-after-{id}.json"))
}

/// The hash a record keeps of the cluster secret (decoded bytes; empty for
/// no secret).
pub fn secret_hash(secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b"ipfs-cluster-bootstrap genesis v1\0");
    h.update(secret);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_hex(n: usize) -> io::Result<String> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(hex(&buf))
}

/// Reads one record file: `Ok(None)` when it does not exist.
fn read_one(path: &Path) -> Result<Option<Genesis>, Error> {
    let bytes = match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Unreadable {
                path: path.to_owned(),
                source,
            })
        }
        Ok(b) => b,
    };
    let bad = |d: String| Error::bad_file(path, d);
    let r: Record = serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a genesis record: {e}")))?;
    if r.version != VERSION {
        return Err(bad(format!(
            "version {} (this tool writes and reads {VERSION})",
            r.version
        )));
    }
    let consensus = Consensus::parse(&r.consensus)
        .ok_or_else(|| bad(format!("consensus {:?} is neither raft nor crdt", r.consensus)))?;
    let founders = r
        .founders
        .iter()
        .map(|f| PeerId::parse(f).map_err(|e| bad(format!("founders: {f:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    if founders.is_empty() {
        return Err(bad("founders is empty".into()));
    }
    if r.id.is_empty() || !r.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("id {:?} is not hexadecimal", r.id)));
    }
    Ok(Some(Genesis {
        id: r.id,
        consensus,
        founders,
        founded_at: r.founded_at,
        secret_sha256: r.secret_sha256,
        path: path.to_owned(),
    }))
}

fn nonce_of(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<Record>(&bytes).ok().map(|r| r.nonce)
}

/// The current record: the last of the chain, `Ok(None)` when there is none.
/// A record that cannot be read or parsed is an error, never "none".
pub fn current(root: &Path) -> Result<Option<Genesis>, Error> {
    let Some(mut g) = read_one(&root.join(FIRST))? else {
        return Ok(None);
    };
    for _ in 0..MAX_CHAIN {
        match read_one(&successor(root, &g.id))? {
            Some(next) => g = next,
            None => return Ok(Some(g)),
        }
    }
    Err(Error::bad_file(
        root,
        format!("more than {MAX_CHAIN} genesis records chained by --refound"),
    ))
}

/// What a founder puts in its record.
#[derive(Debug, Clone)]
pub struct Draft<'a> {
    pub consensus: Consensus,
    pub founders: &'a [PeerId],
    pub secret_sha256: &'a str,
    pub founded_by: &'a str,
    /// `Some(id)`: replace record `id` (`--refound`); `None`: the first record.
    pub supersedes: Option<&'a str>,
}

/// Creates the record, exactly once per name across every client of the
/// state root: temp file with a nonce, fsync, link, read back.
pub fn create(root: &Path, draft: &Draft<'_>) -> Result<Created, Error> {
    let werr = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Write { path, source }
    };
    let target = match draft.supersedes {
        Some(id) => successor(root, id),
        None => root.join(FIRST),
    };
    let id = random_hex(8).map_err(werr(root))?;
    let record = Record {
        version: VERSION,
        id: id.clone(),
        nonce: format!("{id}/{}/{}", draft.founded_by, random_hex(16).map_err(werr(root))?),
        consensus: draft.consensus.as_str().into(),
        founders: draft.founders.iter().map(|p| p.as_str().to_owned()).collect(),
        secret_sha256: draft.secret_sha256.into(),
        founded_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        founded_by: draft.founded_by.into(),
        supersedes: draft.supersedes.map(str::to_owned),
    };
    let tmp = root.join(format!(".genesis.tmp.{id}"));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(&record).map_err(io::Error::other)?)?;
        f.write_all(b"\n")?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Write { path: tmp, source: e });
    }
    // The result of link() is not the answer (see the module comment): the
    // file read back is.
    let linked = std::fs::hard_link(&tmp, &target);
    let _ = std::fs::remove_file(&tmp);
    if let Ok(dir) = std::fs::File::open(root) {
        let _ = dir.sync_all();
    }
    let in_place = match read_one(&target)? {
        Some(g) => g,
        None => {
            return Err(Error::Write {
                path: target,
                source: linked
                    .err()
                    .unwrap_or_else(|| io::Error::other("the record vanished after it was linked")),
            })
        }
    };
    Ok(match nonce_of(&target) == Some(record.nonce) {
        true => Created::Won(in_place),
        false => Created::Lost(in_place),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::peer::tests::IDS;
    const A: &str = IDS[0];
    const B: &str = IDS[1];

    fn root() -> PathBuf {
        let d = std::env::temp_dir().join(format!("icb-genesis-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn draft<'a>(founders: &'a [PeerId], by: &'a str, supersedes: Option<&'a str>) -> Draft<'a> {
        Draft {
            consensus: Consensus::Raft,
            founders,
            secret_sha256: "00",
            founded_by: by,
            supersedes,
        }
    }

    #[test]
    fn the_first_record_wins_and_the_second_reads_it() {
        let r = root();
        assert_eq!(current(&r).unwrap(), None);
        let a = [PeerId::parse(A).unwrap()];
        let b = [PeerId::parse(B).unwrap()];
        let Created::Won(first) = create(&r, &draft(&a, "task-a", None)).unwrap() else {
            panic!("the first create wins")
        };
        assert_eq!(first.founders, a);
        assert_eq!(
            create(&r, &draft(&b, "task-b", None)).unwrap(),
            Created::Lost(first.clone())
        );
        assert_eq!(current(&r).unwrap(), Some(first.clone()));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(&r).unwrap().count(), 1);
        // --refound: a successor, once.
        let Created::Won(second) = create(&r, &draft(&b, "task-b", Some(&first.id))).unwrap() else {
            panic!("the successor is created")
        };
        assert_eq!(current(&r).unwrap(), Some(second.clone()));
        assert_eq!(
            create(&r, &draft(&a, "task-a", Some(&first.id))).unwrap(),
            Created::Lost(second)
        );
        std::fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn a_broken_record_is_an_error_never_none() {
        let r = root();
        for (text, says) in [
            ("", "not a genesis record"),
            ("{\"version\":2}", "not a genesis record"),
            (
                r#"{"version":1,"id":"ab","nonce":"n","consensus":"paxos","founders":[],"secret_sha256":"","founded_at":"","founded_by":""}"#,
                "neither raft nor crdt",
            ),
            (
                r#"{"version":1,"id":"ab","nonce":"n","consensus":"crdt","founders":["nope"],"secret_sha256":"","founded_at":"","founded_by":""}"#,
                "founders: \"nope\"",
            ),
        ] {
            std::fs::write(r.join(FIRST), text).unwrap();
            let e = current(&r).unwrap_err().to_string();
            assert!(e.contains("genesis.json") && e.contains(says), "{text}: {e}");
        }
        std::fs::remove_dir_all(r).unwrap();
    }

    /// 10 would-be founders at once, 200 times: one record each time, and
    /// every one of them reads the same winner.
    #[test]
    fn ten_racing_founders_make_one_record() {
        let peers: Vec<PeerId> = [A, B].iter().map(|p| PeerId::parse(p).unwrap()).collect();
        for round in 0..200 {
            let r = root();
            let barrier = std::sync::Barrier::new(10);
            let outcomes: Vec<Created> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..10)
                    .map(|i| {
                        let (r, barrier, peers) = (&r, &barrier, &peers);
                        s.spawn(move || {
                            let by = format!("task-{i}");
                            let founders = [peers[i % 2].clone()];
                            barrier.wait();
                            create(r, &draft(&founders, &by, None)).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let winners: Vec<&Genesis> = outcomes
                .iter()
                .filter_map(|c| match c {
                    Created::Won(g) => Some(g),
                    Created::Lost(_) => None,
                })
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
            for c in &outcomes {
                let (Created::Won(g) | Created::Lost(g)) = c;
                assert_eq!(g, winners[0], "round {round}");
            }
            std::fs::remove_dir_all(r).unwrap();
        }
    }

    #[test]
    fn the_secret_hash_is_not_the_secret() {
        let h = secret_hash(&[0xab; 32]);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&"ab".repeat(32)));
        assert_ne!(h, secret_hash(&[]));
    }
}
