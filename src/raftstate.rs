//! Whether a raft data folder holds raft state, decided as the daemon decides
//! it: hashicorp/raft `HasExistingState` (raft@v1.7.3 api.go) over the stores
//! ipfs-cluster v1.1.6 opens in `consensus/raft/raft.go` `makeStores`:
//!
//! - `<data_folder>/raft.db`, a BoltDB v2 file (raft-boltdb bolt_store.go):
//!   bucket `conf` key `CurrentTerm` (u64 big-endian) > 0, or bucket `logs`
//!   whose last key (u64 big-endian, the last log index) is > 0;
//! - `<data_folder>/snapshots/` (raft file_snapshot.go `getSnapshots`): a
//!   folder not ending in `.tmp` whose `meta.json` decodes with a Version in
//!   SnapshotVersionMin..=Max (0..=1, raft config.go).
//!
//! The bolt reader is read-only and reads only the pages it needs (pread). The
//! format is boltdb/bolt v1.3.1: page.go (16-byte page header, 16-byte branch
//! and leaf elements), db.go (meta pages 0 and 1: magic, version 2, FNV-64a
//! checksum, the valid one with the higher txid wins), bucket.go (a bucket
//! value is a 16-byte header; root page 0 means an inline page follows),
//! cursor.go (`Last` descends the last element of each page). Every offset
//! and length is checked, each descent is bounded by a visited-page set, and
//! any file we cannot read or parse is an error: we never answer "no state"
//! on doubt, since a peer started on the wrong answer either founds a
//! one-voter cluster of itself or wipes its state with `--bootstrap`.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::exit::Error;

/// A page element: (key, leaf flags, value or child page id).
type Element<'a> = (&'a [u8], u32, &'a [u8]);

const MAGIC: u32 = 0xED0C_DAED;
const HEADER: usize = 16; // page: id u64, flags u16, count u16, overflow u32
const ELEMENT: usize = 16; // branch: pos, ksize, pgid; leaf: flags, pos, ksize, vsize
const BRANCH: u16 = 0x01;
const LEAF: u16 = 0x02;
const BUCKET_LEAF: u32 = 0x01;
/// Deeper than any real bolt tree; a longer descent is a corrupt file.
const MAX_DEPTH: usize = 64;

/// `HasExistingState` for the raft folder the daemon will use. A missing
/// folder, a missing or empty raft.db and a missing snapshots folder hold
/// nothing (the daemon creates them empty).
pub fn has_raft_state(data_folder: &Path) -> Result<bool, Error> {
    let db_path = data_folder.join("raft.db");
    let doubt = |why: String| {
        Error::bad_file(
            &db_path,
            format!("cannot tell whether it holds raft state (the daemon's raft.db): {why}"),
        )
    };
    match File::open(&db_path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(Error::Unreadable { path: db_path, source }),
        Ok(file) => {
            let len = file.metadata().map_err(|e| doubt(e.to_string()))?.len();
            if len > 0 {
                let db = Bolt::open(file, len).map_err(doubt)?;
                if db.current_term().map_err(doubt)? > 0 || db.last_index().map_err(doubt)? > 0 {
                    return Ok(true);
                }
            }
        }
    }
    has_snapshot(&data_folder.join("snapshots"))
}

/// A page of the file, or an inline bucket's page (its bytes only).
enum Root {
    Page(u64),
    Inline(Vec<u8>),
}

struct Bolt {
    file: File,
    len: u64,
    page_size: u64,
    root: u64,
}

/// The little-endian integer of `n` bytes at `at` (bolt writes native order).
fn le(b: &[u8], at: usize, n: usize) -> Result<u64, String> {
    let s = b.get(at..at.saturating_add(n)).ok_or("a field lies outside its page")?;
    Ok(s.iter().rev().fold(0, |acc, &x| acc << 8 | u64::from(x)))
}

/// FNV-64a, bolt's meta checksum.
fn fnv64a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A meta page's (page size, root page, txid) if db.go `validate` accepts it.
fn meta(page: &[u8]) -> Option<(u64, u64, u64)> {
    let m = page.get(HEADER..HEADER + 64)?;
    let f = |at, n| le(m, at, n).unwrap_or(0);
    let (magic, version, sum) = (f(0, 4), f(4, 4), f(56, 8));
    let ok = magic == u64::from(MAGIC) && version == 2 && (sum == 0 || sum == fnv64a(&m[..56]));
    ok.then(|| (f(8, 4), f(16, 8), f(48, 8)))
}

impl Bolt {
    fn open(file: File, len: u64) -> Result<Bolt, String> {
        let read = |at: u64, n: u64| -> Result<Vec<u8>, String> {
            let mut buf = vec![0; n.min(len.saturating_sub(at)) as usize];
            file.read_exact_at(&mut buf, at).map_err(|e| e.to_string())?;
            Ok(buf)
        };
        // db.go Open: page 0's page size if its meta is valid, else the OS's.
        let m0 = meta(&read(0, 0x1000)?);
        let page_size = match m0 {
            Some((ps, ..)) => ps,
            None => os_page_size(),
        };
        if !(512..=1 << 20).contains(&page_size) || len < 2 * page_size {
            return Err(format!("{len} bytes with a page size of {page_size}: not a bolt file"));
        }
        let m1 = meta(&read(page_size, page_size)?);
        // db.go meta(): the higher txid if valid, else the other one.
        let (_, root, _) = match (m0, m1) {
            (Some(a), Some(b)) => {
                if b.2 > a.2 {
                    b
                } else {
                    a
                }
            }
            (Some(m), None) | (None, Some(m)) => m,
            (None, None) => return Err("neither meta page is valid (magic, version 2, checksum)".into()),
        };
        Ok(Bolt {
            file,
            len,
            page_size,
            root,
        })
    }

    fn page(&self, id: u64) -> Result<Vec<u8>, String> {
        let end = |at: u64, n: u64| at.checked_add(n).filter(|&end| end <= self.len);
        let at = id
            .checked_mul(self.page_size)
            .filter(|&at| end(at, self.page_size).is_some());
        let at = at.ok_or_else(|| format!("page {id} is beyond the end of the file"))?;
        let mut buf = vec![0; self.page_size as usize];
        self.file.read_exact_at(&mut buf, at).map_err(|e| e.to_string())?;
        let more = le(&buf, 12, 4)? * self.page_size;
        if more > 0 {
            if end(at + self.page_size, more).is_none() {
                return Err(format!("page {id} overflows beyond the end of the file"));
            }
            buf.resize((self.page_size + more) as usize, 0);
            let tail = &mut buf[self.page_size as usize..];
            self.file
                .read_exact_at(tail, at + self.page_size)
                .map_err(|e| e.to_string())?;
        }
        if le(&buf, 0, 8)? != id {
            return Err(format!("page {id} says it is page {}", le(&buf, 0, 8)?));
        }
        Ok(buf)
    }

    /// The elements of a branch or leaf page: (key, leaf flags, value or child page id).
    fn elements(page: &[u8]) -> Result<(bool, Vec<Element<'_>>), String> {
        let (flags, count) = (le(page, 8, 2)? as u16, le(page, 10, 2)? as usize);
        let leaf = match flags {
            LEAF => true,
            BRANCH if count > 0 => false,
            _ => {
                return Err(format!(
                    "a page has flags {flags:#x} and {count} elements: not a tree page"
                ))
            }
        };
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let e = HEADER + i * ELEMENT;
            let field = |n: usize| le(page, e + 4 * n, 4).map(|x| x as usize);
            // leaf: flags, pos, ksize, vsize; branch: pos, ksize, pgid (as the "value").
            let (flags, pos, ksize, v, vsize) = if leaf {
                let (pos, ksize) = (field(1)?, field(2)?);
                (
                    field(0)? as u32,
                    pos,
                    ksize,
                    e.saturating_add(pos).saturating_add(ksize),
                    field(3)?,
                )
            } else {
                (0, field(0)?, field(1)?, e + 8, 8)
            };
            let k = e.saturating_add(pos);
            let key = page
                .get(k..k.saturating_add(ksize))
                .ok_or("an element's key lies outside its page")?;
            let value = page
                .get(v..v.saturating_add(vsize))
                .ok_or("an element's value lies outside its page")?;
            out.push((key, flags, value));
        }
        Ok((leaf, out))
    }

    /// Descends from `root`: at each branch `pick` chooses the element to follow,
    /// and at the leaf `found` reads the answer. A page met twice is a loop.
    fn descend<T>(
        &self,
        root: &Root,
        pick: impl Fn(&[(&[u8], u32, &[u8])]) -> usize,
        found: impl Fn(&[(&[u8], u32, &[u8])]) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut page = match root {
            Root::Page(id) => self.page(*id)?,
            Root::Inline(bytes) => bytes.clone(),
        };
        let mut seen = HashSet::new();
        loop {
            let (leaf, els) = Bolt::elements(&page)?;
            if leaf {
                return found(&els);
            }
            let child = le(els[pick(&els).min(els.len() - 1)].2, 0, 8)?;
            if !seen.insert(child) || seen.len() > MAX_DEPTH {
                return Err(format!("the tree loops or is too deep at page {child}"));
            }
            page = self.page(child)?;
        }
    }

    /// cursor.go `seek` for an exact key: (leaf flags, value) if present.
    fn get(&self, root: &Root, key: &[u8]) -> Result<Option<(u32, Vec<u8>)>, String> {
        let pick = |els: &[(&[u8], u32, &[u8])]| {
            let i = els.partition_point(|e| e.0 < key);
            if els.get(i).is_some_and(|e| e.0 == key) {
                i
            } else {
                i.saturating_sub(1)
            }
        };
        self.descend(root, pick, |els| {
            let i = els.partition_point(|e| e.0 < key);
            Ok(els.get(i).filter(|e| e.0 == key).map(|e| (e.1, e.2.to_vec())))
        })
    }

    /// tx.go `Bucket` in the root bucket. raft-boltdb creates `logs` and `conf`
    /// at every open, so a missing one is an empty one.
    fn bucket(&self, name: &str) -> Result<Option<Root>, String> {
        let Some((flags, value)) = self.get(&Root::Page(self.root), name.as_bytes())? else {
            return Ok(None);
        };
        if flags & BUCKET_LEAF == 0 {
            return Err(format!(
                "the key {name:?} is not a bucket (the daemon refuses this file)"
            ));
        }
        match le(&value, 0, 8)? {
            0 if value.len() >= 2 * HEADER => Ok(Some(Root::Inline(value[HEADER..].to_vec()))),
            0 => Err(format!("bucket {name:?} is inline but cut short")),
            id => Ok(Some(Root::Page(id))),
        }
    }

    /// BoltStore.GetUint64(CurrentTerm); a missing key (or a nested bucket) is 0.
    fn current_term(&self) -> Result<u64, String> {
        let Some(conf) = self.bucket("conf")? else { return Ok(0) };
        match self.get(&conf, b"CurrentTerm")? {
            Some((flags, v)) if flags & BUCKET_LEAF == 0 => be_u64(&v, "CurrentTerm"),
            _ => Ok(0),
        }
    }

    /// BoltStore.LastIndex: the `logs` bucket's last key, 0 if it has none.
    fn last_index(&self) -> Result<u64, String> {
        let Some(logs) = self.bucket("logs")? else { return Ok(0) };
        self.descend(
            &logs,
            |els| els.len() - 1,
            |els| match els.last() {
                None => Ok(0),
                Some((k, ..)) => be_u64(k, "the last log key"),
            },
        )
    }
}

/// raft-boltdb's bytesToUint64 (which panics on fewer than 8 bytes).
fn be_u64(b: &[u8], what: &str) -> Result<u64, String> {
    let s = b
        .get(..8)
        .ok_or_else(|| format!("{what} has {} bytes, not 8", b.len()))?;
    Ok(u64::from_be_bytes(s.try_into().unwrap_or_default()))
}

fn os_page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096)
}

/// file_snapshot.go `getSnapshots` has at least one entry. The daemon skips a
/// snapshot whose meta.json it cannot open or decode; we skip those it
/// certainly skips (missing, not JSON, a field of the wrong type, a version it
/// does not know) and refuse to guess on the rest (an I/O error, a key that
/// Go would match only case-insensitively).
fn has_snapshot(dir: &Path) -> Result<bool, Error> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(Error::Unreadable {
                path: dir.to_owned(),
                source,
            })
        }
        Ok(entries) => entries,
    };
    for entry in entries {
        let entry = entry.map_err(|source| Error::Unreadable {
            path: dir.to_owned(),
            source,
        })?;
        // os.ReadDir's IsDir: the entry itself, a symlink is not followed.
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || entry.file_name().as_bytes().ends_with(b".tmp") {
            continue;
        }
        let path: PathBuf = entry.path().join("meta.json");
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Error::Unreadable { path, source }),
            Ok(b) => b,
        };
        let valid = snapshot_meta_valid(&bytes).map_err(|why| {
            Error::bad_file(
                &path,
                format!("cannot tell whether the daemon reads this raft snapshot: {why}"),
            )
        })?;
        if valid {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The Go types of fileSnapshotMeta (raft snapshot.go, configuration.go).
enum Ty {
    Int,
    Uint,
    Str,
    Bytes,
    Obj(&'static [(&'static str, Ty)]),
    Arr(&'static Ty),
}

const SERVER: Ty = Ty::Obj(&[("Suffrage", Ty::Int), ("ID", Ty::Str), ("Address", Ty::Str)]);
const META: Ty = Ty::Obj(&[
    ("Version", Ty::Int),
    ("ID", Ty::Str),
    ("Index", Ty::Uint),
    ("Term", Ty::Uint),
    ("Peers", Ty::Bytes),
    ("Configuration", Ty::Obj(&[("Servers", Ty::Arr(&SERVER))])),
    ("ConfigurationIndex", Ty::Uint),
    ("Size", Ty::Int),
    ("CRC", Ty::Bytes),
]);

/// json.Decoder.Decode of the first JSON value, then the version check.
/// Go replaces invalid UTF-8 in strings, hence the lossy conversion.
fn snapshot_meta_valid(bytes: &[u8]) -> Result<bool, String> {
    let text = String::from_utf8_lossy(bytes);
    let Some(Ok(v)) = serde_json::Deserializer::from_str(&text).into_iter::<Value>().next() else {
        return Ok(false);
    };
    let version = v.get("Version").and_then(Value::as_i64).unwrap_or(0);
    Ok(decodes(&v, &META)? && (0..=1).contains(&version))
}

/// Whether encoding/json decodes `v` into `ty` without an error (null always does).
fn decodes(v: &Value, ty: &Ty) -> Result<bool, String> {
    Ok(match (ty, v) {
        (_, Value::Null) => true,
        (Ty::Int, Value::Number(n)) => n.as_i64().is_some(),
        (Ty::Uint, Value::Number(n)) => n.as_u64().is_some(),
        (Ty::Str, Value::String(_)) => true,
        (Ty::Bytes, Value::String(s)) => is_base64(s),
        (Ty::Bytes, Value::Array(a)) => a.iter().all(|x| x.is_null() || x.as_u64().is_some_and(|n| n < 256)),
        (Ty::Arr(t), Value::Array(a)) => a.iter().try_fold(true, |ok, x| Ok::<_, String>(ok && decodes(x, t)?))?,
        (Ty::Obj(fields), Value::Object(m)) => {
            let mut ok = true;
            for (k, x) in m {
                match fields.iter().find(|f| f.0 == k) {
                    Some((_, t)) => ok &= decodes(x, t)?,
                    None if fields.iter().any(|f| fold(f.0) == fold(k)) => {
                        return Err(format!("key {k:?} matches a field only case-insensitively"))
                    }
                    None => {}
                }
            }
            ok
        }
        _ => false,
    })
}

/// Go's field-name folding, close enough to refuse rather than guess.
fn fold(s: &str) -> String {
    s.chars()
        .map(|c| if c == 'ſ' { 's' } else { c.to_ascii_lowercase() })
        .collect()
}

/// base64.StdEncoding.Decode accepts it (padding required, \r and \n ignored).
fn is_base64(s: &str) -> bool {
    let b: Vec<u8> = s.bytes().filter(|&c| c != b'\r' && c != b'\n').collect();
    let body = b.strip_suffix(b"==").or_else(|| b.strip_suffix(b"=")).unwrap_or(&b);
    b.len() % 4 == 0
        && body
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

#[cfg(test)]
mod tests;
