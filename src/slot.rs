//! State slots on a shared state root (an EFS mount shared by every task of
//! the service): `STATE_ROOT/slots/<k>/` holds one peer's kubo repo and
//! cluster folder, and belongs to whichever task holds its lock.
//!
//! ```text
//! STATE_ROOT/genesis.json          (genesis.rs)
//! STATE_ROOT/slots/<k>/slot.lock   flock()ed by the task holding slot k (the `slot` mode, kubo's container)
//! STATE_ROOT/slots/<k>/holder.json which task holds it, for messages only
//! STATE_ROOT/slots/<k>/ipfs/       IPFS_PATH
//! STATE_ROOT/slots/<k>/cluster/    IPFS_CLUSTER_PATH (and retired.json after a scale-in)
//! STATE_ROOT/slots/<k>/peer.lock  flock()ed by that task's cluster container
//! ```
//!
//! The locks are `flock` on files of our own, never kubo's `repo.lock` or
//! ipfs-cluster's files (flock and fcntl locks conflict on NFS). They are taken
//! with non-blocking attempts and kept across exec (the daemon holds them);
//! the lock ends when the last process holding the file open exits, or, for a
//! task that vanished, when EFS expires its lease. I/O and no policy: which
//! slot to wait for and for how long is `app`'s.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// An exclusive `flock` on a file of its own, held while this value (or a
/// process that inherited its descriptor) lives.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// One non-blocking attempt: `Ok(None)` when another open file holds it.
    /// The file is opened for writing (an exclusive lock on NFS needs it, and
    /// the watchdog writes through it).
    pub fn try_take(path: &Path) -> io::Result<Option<Lock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)?;
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(err),
            };
        }
        Ok(Some(Lock {
            file,
            path: path.to_owned(),
        }))
    }

    /// Whether another open file holds the lock on `path` now (it is taken
    /// and released at once when free). A missing file is "not held".
    pub fn is_held(path: &Path) -> io::Result<bool> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
            Ok(file) => {
                if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                    // Closing the file releases it.
                    return Ok(false);
                }
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EWOULDBLOCK) => Ok(true),
                    _ => Err(err),
                }
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Lets the descriptor (and so the lock) survive exec: the daemon that
    /// replaces this process (or its child, supervised) holds it.
    pub fn keep_across_exec(&self) -> io::Result<()> {
        self.set_inherited(true)
    }

    /// Whether a program this process execs or spawns gets the descriptor.
    pub fn set_inherited(&self, inherited: bool) -> io::Result<()> {
        let fd = self.fd();
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        let flags = match inherited {
            true => flags & !libc::FD_CLOEXEC,
            false => flags | libc::FD_CLOEXEC,
        };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Gives the descriptor up without closing it: after exec, the daemon owns it.
    pub fn into_raw(self) -> i32 {
        use std::os::unix::io::IntoRawFd;
        self.file.into_raw_fd()
    }
}

/// Who holds a slot, written beside its lock for the messages of tasks that
/// find none free. Never trusted for safety: the lock decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The ECS task ID, else the host name.
    pub task: String,
    /// RFC 3339, UTC.
    pub since: String,
    /// Random, also in the slot file: the cluster container checks that the
    /// slot is still held by the claim its slot file names.
    #[serde(default)]
    pub nonce: String,
}

/// What the `slot` mode tells the task's other container, through a file on
/// a volume only that task has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotFile {
    pub slot: usize,
    pub state_root: PathBuf,
    pub task: String,
    /// The claim's nonce (`Holder::nonce`).
    #[serde(default)]
    pub nonce: String,
}

pub fn slots_dir(root: &Path) -> PathBuf {
    root.join("slots")
}

pub fn slot_dir(root: &Path, k: usize) -> PathBuf {
    slots_dir(root).join(k.to_string())
}

/// The lock file whose holder owns the slot.
pub fn slot_lock(root: &Path, k: usize) -> PathBuf {
    slot_dir(root, k).join("slot.lock")
}

/// The lock the slot's cluster container holds.
pub fn peer_lock(root: &Path, k: usize) -> PathBuf {
    slot_dir(root, k).join("peer.lock")
}

pub fn ipfs_dir(root: &Path, k: usize) -> PathBuf {
    slot_dir(root, k).join("ipfs")
}

pub fn cluster_dir(root: &Path, k: usize) -> PathBuf {
    slot_dir(root, k).join("cluster")
}

fn holder_file(root: &Path, k: usize) -> PathBuf {
    slot_dir(root, k).join("holder.json")
}

/// A slot this process holds.
#[derive(Debug)]
pub struct Claimed {
    pub index: usize,
    pub lock: Lock,
}

/// `slots/<k>/cluster/retired.json`: the slot's peer left the raft peerset
/// at a scale-in (`retire`). In the cluster folder: the cluster container
/// writes it after dropping to `--run-as`, which owns that folder only.
pub fn retired_file(root: &Path, k: usize) -> PathBuf {
    retired_in(&cluster_dir(root, k))
}

/// The retired marker in a slot's cluster folder.
pub fn retired_in(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("retired.json")
}

/// Whether slot `k` holds a peer that is still a member: it has an identity
/// and was not retired, or it rejoined since (its marker says `rejoining`
/// and it has raft state again, which only the join gave it).
fn is_member(root: &Path, k: usize) -> bool {
    let cluster = cluster_dir(root, k);
    if !cluster.join("identity.json").exists() {
        return false;
    }
    let Ok(marker) = std::fs::read(retired_file(root, k)) else {
        return true;
    };
    let rejoining =
        serde_json::from_slice::<serde_json::Value>(&marker).is_ok_and(|v| v["rejoining"].as_bool() == Some(true));
    rejoining && crate::raftstate::has_raft_state(&cluster.join("raft")).unwrap_or(false)
}

/// The slots a claim tries, in order: those whose peer is a member, whatever
/// their number (scale-in retires whichever peers ECS stopped), then, only
/// while the members are fewer than `count`, the lowest other slots up to
/// `count` in all. So a replacement waits for its member's slot (a vanished
/// task's lock lasts until its lease expires) rather than bring a retired
/// peer back and leave a voter behind.
pub fn claim_order(root: &Path, count: usize) -> io::Result<Vec<usize>> {
    let mut existing: Vec<usize> = match std::fs::read_dir(slots_dir(root)) {
        Ok(dir) => dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
            .collect(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    existing.sort_unstable();
    let members: Vec<usize> = existing.into_iter().filter(|&k| is_member(root, k)).collect();
    let others = count.saturating_sub(members.len());
    let rest = (0..).filter(|k| !members.contains(k)).take(others);
    Ok(members.iter().copied().chain(rest).collect())
}

/// Every slot's holder, when none is free (`None`: a holder record we could not read).
pub type Busy = Vec<(usize, Option<Holder>)>;

/// One pass over the slots in `claim_order`: the first whose lock is free,
/// or every slot's holder when none is.
pub fn try_claim(root: &Path, count: usize, holder: &Holder) -> io::Result<Result<Claimed, Busy>> {
    let mut busy = Vec::new();
    for k in claim_order(root, count)? {
        let dir = slot_dir(root, k);
        std::fs::create_dir_all(&dir)?;
        match Lock::try_take(&slot_lock(root, k))? {
            Some(lock) => {
                write_atomic(
                    &holder_file(root, k),
                    &serde_json::to_vec_pretty(holder).unwrap_or_default(),
                )?;
                return Ok(Ok(Claimed { index: k, lock }));
            }
            None => busy.push((k, read_holder(root, k))),
        }
    }
    Ok(Err(busy))
}

/// The slot's holder record, if readable (it is informative only).
pub fn read_holder(root: &Path, k: usize) -> Option<Holder> {
    let bytes = std::fs::read(holder_file(root, k)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// "slot 0 (task abc since …), slot 1 (unknown holder)".
pub fn describe_holders(busy: &[(usize, Option<Holder>)]) -> String {
    busy.iter()
        .map(|(k, h)| match h {
            Some(h) => format!("slot {k} (task {} since {})", h.task, h.since),
            None => format!("slot {k} (holder unknown)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the slot file; `Ok(None)` while it does not exist yet.
pub fn read_slot_file(path: &Path) -> Result<Option<SlotFile>, String> {
    match std::fs::read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("not a slot file written by `ipfs-cluster-bootstrap slot`: {e}")),
    }
}

/// Writes `contents` to `path` through a temporary file, fsync and rename.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.{}", std::process::id(), fastrand::u64(..)));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o644).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(task: &str) -> Holder {
        Holder {
            task: task.into(),
            since: "2026-11-30T00:00:00Z".into(),
            nonce: String::new(),
        }
    }

    fn root() -> PathBuf {
        let d = std::env::temp_dir().join(format!("icb-slot-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_lock_cannot_be_held_twice_and_is_free_once_closed() {
        let r = root();
        let p = r.join("x.lock");
        let a = Lock::try_take(&p).unwrap().expect("free");
        assert!(
            Lock::try_take(&p).unwrap().is_none(),
            "a second open file cannot take it"
        );
        assert!(Lock::is_held(&p).unwrap());
        drop(a);
        assert!(!Lock::is_held(&p).unwrap());
        assert!(Lock::try_take(&p).unwrap().is_some());
        assert!(!Lock::is_held(&r.join("missing.lock")).unwrap());
        std::fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn slots_are_claimed_lowest_first_and_bounded_by_the_count() {
        let r = root();
        let a = try_claim(&r, 2, &holder("a")).unwrap().unwrap();
        let b = try_claim(&r, 2, &holder("b")).unwrap().unwrap();
        assert_eq!((a.index, b.index), (0, 1));
        let busy = try_claim(&r, 2, &holder("c")).unwrap().unwrap_err();
        assert_eq!(busy, vec![(0, Some(holder("a"))), (1, Some(holder("b")))]);
        assert_eq!(
            describe_holders(&busy),
            "slot 0 (task a since 2026-11-30T00:00:00Z), slot 1 (task b since 2026-11-30T00:00:00Z)"
        );
        // A freed slot is the next one taken, with its data in place.
        std::fs::create_dir_all(cluster_dir(&r, 0)).unwrap();
        drop(a);
        let c = try_claim(&r, 2, &holder("c")).unwrap().unwrap();
        assert_eq!(c.index, 0);
        assert!(cluster_dir(&r, 0).is_dir());
        assert_eq!(read_holder(&r, 0), Some(holder("c")));
        drop((b, c));
        std::fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn members_slots_come_first_whatever_their_number() {
        let r = root();
        let member = |k: usize| {
            std::fs::create_dir_all(cluster_dir(&r, k)).unwrap();
            std::fs::write(cluster_dir(&r, k).join("identity.json"), "{}").unwrap();
        };
        assert_eq!(claim_order(&r, 3).unwrap(), vec![0, 1, 2]);
        // After a scale-in 5 -> 3 that retired slots 1 and 2: the voters are 0, 3, 4.
        (0..5).for_each(member);
        for k in [1, 2] {
            write_atomic(&retired_file(&r, k), b"{}").unwrap();
        }
        assert_eq!(claim_order(&r, 3).unwrap(), vec![0, 3, 4]);
        let a = try_claim(&r, 3, &holder("a")).unwrap().unwrap();
        let b = try_claim(&r, 3, &holder("b")).unwrap().unwrap();
        let c = try_claim(&r, 3, &holder("c")).unwrap().unwrap();
        assert_eq!((a.index, b.index, c.index), (0, 3, 4));
        // Slot 4's task goes: its replacement waits for slot 4, not a retired slot.
        let busy = try_claim(&r, 3, &holder("d")).unwrap().unwrap_err();
        assert_eq!(busy.iter().map(|(k, _)| *k).collect::<Vec<_>>(), vec![0, 3, 4]);
        // A scale-out to 4 takes the lowest retired slot.
        assert_eq!(claim_order(&r, 4).unwrap(), vec![0, 3, 4, 1]);
        assert_eq!(try_claim(&r, 4, &holder("d")).unwrap().unwrap().index, 1);
        // A slot that is not a number is no slot; members beyond the count are all tried.
        std::fs::create_dir_all(slots_dir(&r).join("tmp")).unwrap();
        assert_eq!(claim_order(&r, 1).unwrap(), vec![0, 3, 4]);
        drop((a, b, c));
        std::fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn the_lock_survives_exec_only_when_asked() {
        let r = root();
        let lock = Lock::try_take(&r.join("x.lock")).unwrap().unwrap();
        let cloexec = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC;
        assert_ne!(cloexec(lock.fd()), 0);
        lock.keep_across_exec().unwrap();
        assert_eq!(cloexec(lock.fd()), 0);
        lock.set_inherited(false).unwrap();
        assert_ne!(cloexec(lock.fd()), 0);
        drop(lock);
        std::fs::remove_dir_all(r).unwrap();
    }

    #[test]
    fn slot_files_round_trip_and_garbage_is_named() {
        let r = root();
        let p = r.join("slot.json");
        assert_eq!(read_slot_file(&p), Ok(None));
        let s = SlotFile {
            slot: 3,
            state_root: "/state".into(),
            task: "t".into(),
            nonce: "n".into(),
        };
        write_atomic(&p, &serde_json::to_vec(&s).unwrap()).unwrap();
        assert_eq!(read_slot_file(&p), Ok(Some(s)));
        std::fs::write(&p, "3").unwrap();
        assert!(read_slot_file(&p).unwrap_err().contains("not a slot file"));
        std::fs::remove_dir_all(r).unwrap();
    }
}
