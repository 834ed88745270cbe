//! Real raft.db files made by ipfs-cluster-service v1.1.6 (tests/fixtures/raft,
//! its README says how each was made and what the daemon did with it), and
//! hand-built bolt files for the corrupt shapes the daemon never writes.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use super::*;
use crate::local::tempdir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/raft")
        .join(name)
}

/// A copy of a fixture folder to change.
fn copy(name: &str) -> tempdir::Dir {
    fn cp(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                cp(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let d = tempdir::Dir::new();
    cp(&fixture(name), d.path());
    d
}

fn bolt(path: &Path) -> Bolt {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len();
    Bolt::open(f, len).unwrap()
}

#[test]
fn a_failed_join_leaves_no_state() {
    // The daemon started on this folder logs "initializing raft cluster": a new
    // cluster of itself. The folder is not empty (raft.db, snapshots/).
    let db = bolt(&fixture("failed-join/raft.db"));
    assert_eq!((db.current_term(), db.last_index()), (Ok(0), Ok(0)));
    assert!(!has_raft_state(&fixture("failed-join")).unwrap());
}

#[test]
fn a_term_and_log_entries_are_state() {
    let db = bolt(&fixture("has-log/raft.db"));
    assert!(db.current_term().unwrap() >= 1);
    assert!(db.last_index().unwrap() >= 1);
    assert!(has_raft_state(&fixture("has-log")).unwrap());
    // The logs bucket on pages of its own under a branch page.
    let db = bolt(&fixture("many-logs/raft.db"));
    assert_eq!(db.current_term(), Ok(3));
    assert!(db.last_index().unwrap() >= 63, "{:?}", db.last_index());
    assert!(has_raft_state(&fixture("many-logs")).unwrap());
}

#[test]
fn a_snapshot_alone_is_state_unless_the_daemon_skips_it() {
    assert!(has_raft_state(&fixture("snapshot-only")).unwrap());
    let snap = "snapshots/3-63-1795991014649";
    // Each of these, started with the real daemon, logged "initializing raft cluster".
    let d = copy("snapshot-only");
    std::fs::rename(d.path().join(snap), d.path().join(format!("{snap}.tmp"))).unwrap();
    assert!(!has_raft_state(d.path()).unwrap(), ".tmp is skipped");
    let d = copy("snapshot-only");
    let meta = d.path().join(snap).join("meta.json");
    let text = std::fs::read_to_string(&meta)
        .unwrap()
        .replace("\"Version\":1", "\"Version\":2");
    std::fs::write(&meta, text).unwrap();
    assert!(!has_raft_state(d.path()).unwrap(), "an unknown version is skipped");
    std::fs::remove_file(&meta).unwrap();
    assert!(!has_raft_state(d.path()).unwrap(), "no meta.json is skipped");
}

#[test]
fn nothing_there_is_no_state() {
    let d = tempdir::Dir::new();
    assert!(!has_raft_state(&d.path().join("absent")).unwrap());
    assert!(!has_raft_state(d.path()).unwrap());
    std::fs::create_dir(d.path().join("snapshots")).unwrap();
    std::fs::write(d.path().join("raft.db"), "").unwrap(); // bolt initialises an empty file
    assert!(!has_raft_state(d.path()).unwrap());
}

#[test]
fn a_file_we_cannot_read_is_an_error_never_no_state() {
    // The real daemon: SIGBUS on the truncated file, "invalid database" on garbage.
    for (name, says) in [("truncated", "beyond the end"), ("garbage", "meta page")] {
        let e = has_raft_state(&fixture(name)).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("raft.db") && text.contains("cannot tell") && text.contains(says),
            "{text}"
        );
        assert_eq!(e.exit_code(), crate::exit::code::DATAERR);
    }
    let d = tempdir::Dir::new();
    std::fs::create_dir(d.path().join("raft.db")).unwrap();
    assert!(has_raft_state(d.path()).is_err(), "raft.db is a folder");
}

#[test]
fn the_newer_valid_meta_page_wins_and_a_broken_one_is_passed_over() {
    let d = copy("many-logs");
    let db = d.path().join("raft.db");
    let mut bytes = std::fs::read(&db).unwrap();
    let txid = |b: &[u8], page: usize| le(b, page * 4096 + HEADER + 48, 8).unwrap();
    let newer = if txid(&bytes, 1) > txid(&bytes, 0) { 1 } else { 0 };
    bytes[newer * 4096 + HEADER + 60] ^= 0xff; // its checksum
    std::fs::write(&db, &bytes).unwrap();
    assert!(
        has_raft_state(d.path()).unwrap(),
        "the older meta page still has the log"
    );
    bytes[(1 - newer) * 4096 + HEADER] ^= 0xff; // the other's magic
    std::fs::write(&db, &bytes).unwrap();
    assert!(has_raft_state(d.path())
        .unwrap_err()
        .to_string()
        .contains("neither meta page"));
}

/// A bolt file of 4 KiB pages: meta pages 0 and 1 (root page 2), then `pages`.
fn build(pages: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![0u8; 4096 * (2 + pages.len())];
    for id in 0..2u64 {
        let p = &mut out[id as usize * 4096..];
        p[..8].copy_from_slice(&id.to_le_bytes());
        p[8..10].copy_from_slice(&4u16.to_le_bytes());
        let mut m = Vec::new();
        for x in [MAGIC, 2, 4096, 0] {
            m.extend(x.to_le_bytes());
        }
        for x in [2u64, 0, 0, 2 + pages.len() as u64, id] {
            m.extend(x.to_le_bytes()); // root, sequence, freelist, high water, txid
        }
        let sum = fnv64a(&m);
        m.extend(sum.to_le_bytes());
        p[HEADER..HEADER + 64].copy_from_slice(&m);
    }
    for (i, page) in pages.iter().enumerate() {
        out[(2 + i) * 4096..][..page.len()].copy_from_slice(page);
    }
    out
}

/// A page: header, then elements (leaf: flags, key, value; branch: key, child).
fn page(id: u64, leaf: bool, elems: &[(u32, &[u8], Vec<u8>)]) -> Vec<u8> {
    let mut p = id.to_le_bytes().to_vec();
    p.extend((if leaf { LEAF } else { BRANCH }).to_le_bytes());
    p.extend((elems.len() as u16).to_le_bytes());
    p.extend(0u32.to_le_bytes());
    let mut data = Vec::new();
    for (i, (flags, k, v)) in elems.iter().enumerate() {
        let pos = (ELEMENT * (elems.len() - i) + data.len()) as u32;
        if leaf {
            for x in [*flags, pos, k.len() as u32, v.len() as u32] {
                p.extend(x.to_le_bytes());
            }
            data.extend_from_slice(k);
            data.extend_from_slice(v);
        } else {
            for x in [pos, k.len() as u32] {
                p.extend(x.to_le_bytes());
            }
            p.extend_from_slice(&v[..8]);
            data.extend_from_slice(k);
        }
    }
    p.extend(data);
    p
}

fn bucket_at(id: u64) -> Vec<u8> {
    [id.to_le_bytes(), 0u64.to_le_bytes()].concat()
}

fn check(file: Vec<u8>) -> Result<bool, String> {
    let d = tempdir::Dir::new();
    std::fs::write(d.path().join("raft.db"), file).unwrap();
    has_raft_state(d.path()).map_err(|e| e.to_string())
}

#[test]
fn hand_built_trees_are_walked_and_bounded() {
    let key = |i: u64| i.to_be_bytes().to_vec();
    let leaf = |id, i: u64| page(id, true, &[(0, &key(i), b"entry".to_vec())]);
    let branch = |id, kids: &[(u64, u64)]| {
        let ks: Vec<Vec<u8>> = kids.iter().map(|(i, _)| key(*i)).collect();
        let es: Vec<(u32, &[u8], Vec<u8>)> = kids
            .iter()
            .zip(&ks)
            .map(|((_, c), k)| (0, k.as_slice(), c.to_le_bytes().to_vec()))
            .collect();
        page(id, false, &es)
    };
    let root = page(2, true, &[(BUCKET_LEAF, b"logs", bucket_at(3))]);
    // logs: branch 3 → leaves 4 (index 1) and 5 (index 7): last index 7.
    let good = build(&[root.clone(), branch(3, &[(1, 4), (7, 5)]), leaf(4, 1), leaf(5, 7)]);
    assert_eq!(check(good), Ok(true));
    // A branch pointing back at itself, or past the end of the file.
    let e = check(build(&[root.clone(), branch(3, &[(1, 4), (7, 3)]), leaf(4, 1)])).unwrap_err();
    assert!(e.contains("loops"), "{e}");
    let e = check(build(&[root.clone(), branch(3, &[(1, 99)])])).unwrap_err();
    assert!(e.contains("beyond the end"), "{e}");
    // A last log key shorter than 8 bytes (raft-boltdb would panic).
    let short = page(3, true, &[(0, b"\x01", b"x".to_vec())]);
    let e = check(build(&[root.clone(), short])).unwrap_err();
    assert!(e.contains("not 8"), "{e}");
    // `logs` that is not a bucket: the daemon refuses the file.
    let not_bucket = page(2, true, &[(0, b"logs", b"value".to_vec())]);
    assert!(check(build(&[not_bucket])).unwrap_err().contains("not a bucket"));
    // An element whose key lies past its page.
    let mut bad = root.clone();
    bad[HEADER + 4..HEADER + 8].copy_from_slice(&5000u32.to_le_bytes());
    assert!(check(build(&[bad])).unwrap_err().contains("outside its page"));
    // An empty conf and no logs bucket at all: no state.
    let conf = [bucket_at(0), page(0, true, &[])].concat();
    assert_eq!(
        check(build(&[page(2, true, &[(BUCKET_LEAF, b"conf", conf)])])),
        Ok(false)
    );
}

#[test]
fn current_term_in_an_inline_conf_bucket() {
    let conf = |term: u64| {
        [
            bucket_at(0),
            page(0, true, &[(0, b"CurrentTerm", term.to_be_bytes().to_vec())]),
        ]
        .concat()
    };
    for (term, state) in [(0, false), (5, true)] {
        let root = page(2, true, &[(BUCKET_LEAF, b"conf", conf(term))]);
        assert_eq!(check(build(&[root])), Ok(state), "term {term}");
    }
}

#[test]
fn snapshot_meta_as_encoding_json_decodes_it() {
    for (json, valid) in [
        (
            r#"{"Version":1,"ID":"1-2-3","Index":2,"Term":1,"CRC":"i2QE8R28cHM="}"#,
            Ok(true),
        ),
        (r#"{} trailing bytes"#, Ok(true)), // Decode reads one value; version 0
        ("null", Ok(true)),
        (r#"{"Version":2}"#, Ok(false)),
        (r#"{"Version":-1}"#, Ok(false)),
        (r#"{"Version":"1"}"#, Ok(false)),
        (r#"{"Version":1,"Index":-1}"#, Ok(false)),
        (r#"{"Version":1,"Term":1.5}"#, Ok(false)),
        (r#"{"Version":1,"CRC":"abc"}"#, Ok(false)),
        (
            r#"{"Version":1,"Configuration":{"Servers":[{"Suffrage":"Voter"}]}}"#,
            Ok(false),
        ),
        (r#"{"Version":1,"Unknown":[1,2]}"#, Ok(true)),
        ("[1]", Ok(false)),
        ("", Ok(false)),
        ("{\"Version\":1", Ok(false)),
    ] {
        assert_eq!(snapshot_meta_valid(json.as_bytes()), valid, "{json}");
    }
    assert!(
        snapshot_meta_valid(br#"{"version":1}"#).is_err(),
        "Go matches keys case-insensitively"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        let _ = check(bytes);
    }

    #[test]
    fn a_damaged_real_file_never_panics(flips in proptest::collection::vec((0usize..65536, any::<u8>()), 1..16)) {
        let mut bytes = std::fs::read(fixture("many-logs/raft.db")).unwrap();
        for (at, x) in flips {
            bytes[at] ^= x;
        }
        let _ = check(bytes);
    }
}
