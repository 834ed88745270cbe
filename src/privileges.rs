//! Dropping root: the official image starts as root; the daemon must not run
//! as root. When started as root with `--run-as UID:GID`, make the config
//! folder that user's (as the official entrypoint does) and become it, before
//! anything else runs.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::exit::Error;

/// Becomes `uid:gid` if running as root; a no-op otherwise. `config_dir`
/// (given by `run` only: the other modes write nothing) is created and made
/// that user's first.
pub fn drop_root(run_as: Option<(u32, u32)>, config_dir: Option<&Path>) -> Result<(), Error> {
    let Some((uid, gid)) = run_as else {
        // Only `run` starts a daemon: the other modes have none to warn about.
        if config_dir.is_some() && unsafe { libc::geteuid() } == 0 {
            tracing::warn!("running as root with --run-as none: the daemon will run as root");
        }
        return Ok(());
    };
    if unsafe { libc::geteuid() } != 0 || uid == 0 {
        return Ok(());
    }
    if let Some(config_dir) = config_dir {
        let werr = |source| Error::Write {
            path: config_dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(config_dir).map_err(werr)?;
        // Like the official entrypoint: fix ownership only when the folder is
        // not the user's yet (a datastore is large).
        let top = std::fs::metadata(config_dir).map_err(werr)?;
        if top.uid() != uid || top.gid() != gid {
            chown_tree(config_dir, uid, gid).map_err(werr)?;
        }
    }
    // Supplementary groups first, then the group, then the user.
    let ok = unsafe { libc::setgroups(0, std::ptr::null()) == 0 && libc::setgid(gid) == 0 && libc::setuid(uid) == 0 };
    if !ok {
        return Err(Error::Unsafe(format!(
            "cannot switch to --run-as {uid}:{gid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    tracing::debug!(uid, gid, "dropped root");
    Ok(())
}

/// chown -R, only where the owner differs (a large datastore is walked, not rewritten).
fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
