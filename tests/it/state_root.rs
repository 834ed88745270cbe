//! --state-root on the stand-in daemon: slots are exclusive, a lock that
//! fails stops its daemon, racing founders make one genesis record, and a
//! state root whose slots are gone never founds a second cluster. (The real
//! daemons' replacements and total losses are in tests/real/test_state_root.py.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::peer::{Peer, Setup};
use crate::support::{bin, Net, TempDir};

/// `ipfs-cluster-bootstrap slot … -- PROGRAM`, as kubo's container runs it.
fn slot_cmd(state_root: &Path, slot_file: &Path, expect: usize, extra: &[&str], program: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .args(["slot", "--state-root"])
        .arg(state_root)
        .arg("--slot-file")
        .arg(slot_file)
        .args(["--expect", &expect.to_string(), "--timeout", "3s"])
        .args(extra)
        .arg("--")
        .args(program)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

fn spawn_logged(mut c: Command, log: &Path) -> Child {
    c.stderr(fs::File::create(log).unwrap()).spawn().unwrap()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> i32 {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            return s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0));
        }
        assert!(t.elapsed() < timeout, "no exit in {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_file(p: &Path) -> Value {
    let t = Instant::now();
    loop {
        if let Ok(s) = fs::read_to_string(p) {
            if let Ok(v) = serde_json::from_str(&s) {
                return v;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10), "{} never written", p.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn environ(pid: u32) -> String {
    fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', "\n"))
        .unwrap_or_default()
}

#[test]
fn a_slot_is_held_once_and_a_task_finding_none_free_names_its_holder() {
    let tmp = TempDir::new("slots");
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let mut first = spawn_logged(
        slot_cmd(&state, &tmp.0.join("a.json"), 1, &[], &["/bin/sleep", "600"]),
        &tmp.0.join("a.log"),
    );
    let a = wait_for_file(&tmp.0.join("a.json"));
    assert_eq!(a["slot"], 0);
    // The program runs in place of `slot`, on the slot's kubo repo.
    let want = format!("IPFS_PATH={}", state.join("slots/0/ipfs").display());
    let t = Instant::now();
    while !environ(first.id()).lines().any(|l| l == want) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{want} not in the program's environment"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(state.join("slots/0/ipfs").is_dir());

    let mut second = spawn_logged(
        slot_cmd(&state, &tmp.0.join("b.json"), 1, &[], &["/bin/sleep", "600"]),
        &tmp.0.join("b.log"),
    );
    assert_eq!(wait_exit(&mut second, Duration::from_secs(10)), 75);
    let log = fs::read_to_string(tmp.0.join("b.log")).unwrap();
    assert!(
        log.contains("all 1 slots under") && log.contains("slot 0 (task "),
        "{log}"
    );
    assert!(!tmp.0.join("b.json").exists());

    // The holder goes: the slot is free again, with its data.
    first.kill().unwrap();
    first.wait().unwrap();
    let mut third = spawn_logged(
        slot_cmd(&state, &tmp.0.join("c.json"), 1, &[], &["/bin/sleep", "600"]),
        &tmp.0.join("c.log"),
    );
    assert_eq!(wait_for_file(&tmp.0.join("c.json"))["slot"], 0);
    // The first claim's slot file is stale now: a cluster container reading
    // it must not use the slot another task holds.
    if crate::support::testbed_ready() {
        let mut p = Peer::new(&tmp.0, "stale", Net::new().ip());
        let me = format!("/ip4/{}/tcp/9096", p.ip);
        let setup = Setup::cloudmap("http://127.0.0.1:1", "unused", "unused", "crdt", 1)
            .arg(&["--discovery", "static", "--peers", &me, "--timeout", "2s"])
            .arg(&["--state-root", state.to_str().unwrap()])
            .arg(&["--slot-file", tmp.0.join("a.json").to_str().unwrap()]);
        p.start(&setup);
        assert_eq!(p.wait(Duration::from_secs(20)), 78);
        assert!(
            p.stderr().contains("names slot 0 of") && p.stderr().contains("it is now task"),
            "{}",
            p.stderr()
        );
        assert!(!state.join("slots/0/cluster").exists(), "nothing written in the slot");
    }
    third.kill().unwrap();
    third.wait().unwrap();
}

#[test]
fn a_lock_that_can_no_longer_be_trusted_stops_its_daemon() {
    let tmp = TempDir::new("fence");
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let mut holder = spawn_logged(
        slot_cmd(
            &state,
            &tmp.0.join("a.json"),
            1,
            &["--watchdog-interval", "200ms"],
            &["/bin/sleep", "600"],
        ),
        &tmp.0.join("a.log"),
    );
    wait_for_file(&tmp.0.join("a.json"));
    // Still running after a few heartbeats, which go through the lock.
    std::thread::sleep(Duration::from_millis(800));
    assert!(holder.try_wait().unwrap().is_none());
    let lock = state.join("slots/0/slot.lock");
    assert!(fs::read_to_string(&lock).unwrap().starts_with("held "));
    // Someone removes the lock file: another task could now lock a new one.
    fs::remove_file(&lock).unwrap();
    assert_eq!(wait_exit(&mut holder, Duration::from_secs(5)), 128 + libc::SIGTERM);
    let log = fs::read_to_string(tmp.0.join("a.log")).unwrap();
    assert!(
        log.contains("can no longer be trusted (the lock file was removed)"),
        "{log}"
    );
}

/// A peer of its own, in slot `k` of `state`: a `slot` process (sleep) holds
/// the slot as kubo's container would, and `run` uses it.
struct SlotPeer {
    peer: Peer,
    holder: Child,
    slot_file: PathBuf,
}

impl SlotPeer {
    fn new(tmp: &Path, state: &Path, name: &str, net: &mut Net, slots: usize) -> SlotPeer {
        let peer = Peer::new(tmp, name, net.ip());
        let slot_file = peer.dir.join("slot.json");
        let holder = spawn_logged(
            slot_cmd(state, &slot_file, slots, &[], &["/bin/sleep", "600"]),
            &peer.dir.join("slot.log"),
        );
        wait_for_file(&slot_file);
        SlotPeer {
            peer,
            holder,
            slot_file,
        }
    }

    fn setup(&self, state: &Path, consensus: &str) -> Setup {
        let me = format!("/ip4/{}/tcp/9096", self.peer.ip);
        Setup::cloudmap("http://127.0.0.1:1", "unused", "unused", consensus, 1)
            .arg(&[
                "--discovery",
                "static",
                "--peers",
                &me,
                "--settle",
                "100ms",
                "--timeout",
                "2s",
            ])
            .arg(&["--state-root", state.to_str().unwrap()])
            .arg(&["--slot-file", self.slot_file.to_str().unwrap()])
    }

    /// How many times the double ran as this slot's daemon.
    fn daemon_runs(&self, state: &Path) -> usize {
        fs::read_to_string(self.slot_dir(state).join("cluster/double-runs.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Until the double has run `n` times as this slot's daemon.
    fn wait_daemon_runs(&self, state: &Path, n: usize, timeout: Duration) {
        let t = Instant::now();
        while self.daemon_runs(state) < n {
            assert!(
                t.elapsed() < timeout,
                "{}: fewer than {n} daemon runs after {timeout:?}:\n{}",
                self.peer.name,
                self.peer.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn slot_dir(&self, state: &Path) -> PathBuf {
        let v: Value = serde_json::from_str(&fs::read_to_string(&self.slot_file).unwrap()).unwrap();
        state.join("slots").join(v["slot"].as_u64().unwrap().to_string())
    }
}

impl Drop for SlotPeer {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Ten peers that each see only themselves (a registry whose delays never
/// end) and would each found alone: the genesis record lets one found, and
/// the nine others never do. CI runs 20 races; ICB_GENESIS_RACES=200 more.
#[test]
fn ten_would_be_founders_make_one_genesis_record_and_one_cluster() {
    if !crate::support::testbed_ready() {
        return;
    }
    let races: usize = std::env::var("ICB_GENESIS_RACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let tmp = TempDir::new("race");
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let mut net = Net::new();
    let mut peers: Vec<SlotPeer> = (0..10)
        .map(|i| SlotPeer::new(&tmp.0, &state, &format!("p{i}"), &mut net, 10))
        .collect();
    for race in 0..races {
        let consensus = if race % 2 == 0 { "crdt" } else { "raft" };
        // A fresh state root but for the identities: no record, no state.
        let _ = fs::remove_file(state.join("genesis.json"));
        for p in &peers {
            let cluster = p.slot_dir(&state).join("cluster");
            if let Ok(entries) = fs::read_dir(&cluster) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if !matches!(name.as_str(), "identity.json" | "service.json") {
                        let _ = fs::remove_dir_all(e.path()).or_else(|_| fs::remove_file(e.path()));
                    }
                }
                // service.json's consensus follows IPFS_CLUSTER_CONSENSUS only at init.
                let _ = fs::remove_file(cluster.join("service.json"));
            }
        }
        for p in peers.iter_mut() {
            let setup = p.setup(&state, consensus);
            p.peer.start(&setup);
        }
        // Nine give up with "cluster lost"; one runs the daemon.
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut exited = vec![None; peers.len()];
        while exited.iter().filter(|e| e.is_some()).count() < peers.len() - 1 {
            assert!(Instant::now() < deadline, "race {race}: {exited:?}");
            for (i, p) in peers.iter_mut().enumerate() {
                if exited[i].is_none() {
                    exited[i] = p.peer.try_exit();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let running: Vec<usize> = (0..peers.len()).filter(|&i| exited[i].is_none()).collect();
        assert_eq!(running.len(), 1, "race {race}: {exited:?}");
        let winner = &mut peers[running[0]];
        winner.wait_daemon_runs(&state, 1, Duration::from_secs(10));
        let record: Value = serde_json::from_str(&fs::read_to_string(state.join("genesis.json")).unwrap()).unwrap();
        let winner_id = winner.peer.decisions().last().unwrap()["facts"]["me"]["peer_id"].clone();
        assert_eq!(record["founders"], serde_json::json!([winner_id]), "race {race}");
        assert_eq!(record["consensus"], consensus);
        for (i, p) in peers.iter().enumerate() {
            if i == running[0] {
                continue;
            }
            let log = p.peer.stderr();
            assert_eq!(exited[i], Some(76), "race {race}: {}:\n{log}", p.peer.name);
            assert_eq!(p.daemon_runs(&state), 0, "race {race}: {} ran a daemon", p.peer.name);
            let last = log.lines().last().unwrap_or_default();
            assert!(
                last.contains(&format!("genesis record {}", record["id"].as_str().unwrap())),
                "{last}"
            );
            assert!(last.contains("--refound"), "{last}");
        }
        peers[running[0]].peer.stop();
        for p in &peers {
            crate::support::assert_no_secrets(&p.peer.stderr());
        }
    }
}

/// The slots are wiped (or lost) but genesis.json remains: no peer founds a
/// second, empty cluster; it exits 76 naming the record, and --refound with
/// that record's ID is the way out. Another secret is refused.
#[test]
fn a_state_root_without_its_peers_never_founds_again_unless_told() {
    if !crate::support::testbed_ready() {
        return;
    }
    let tmp = TempDir::new("lost");
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let mut net = Net::new();
    let mut a = SlotPeer::new(&tmp.0, &state, "a", &mut net, 3);
    let setup = a.setup(&state, "crdt");
    a.peer.start(&setup);
    a.wait_daemon_runs(&state, 1, Duration::from_secs(20));
    a.peer.stop();
    let record: Value = serde_json::from_str(&fs::read_to_string(state.join("genesis.json")).unwrap()).unwrap();
    let id = record["id"].as_str().unwrap().to_owned();

    // A restart on its slot starts on its state: no record needed.
    a.peer.start(&setup);
    a.wait_daemon_runs(&state, 2, Duration::from_secs(20));
    a.peer.stop();
    assert_eq!(
        a.peer.decisions().last().unwrap()["decision"]["reason"]["rule"],
        "existing_state"
    );
    drop(a);

    // Total loss with the slots gone: a new peer, a new identity.
    fs::remove_dir_all(state.join("slots")).unwrap();
    let mut b = SlotPeer::new(&tmp.0, &state, "b", &mut net, 3);
    let setup = b.setup(&state, "crdt");
    b.peer.start(&setup);
    assert_eq!(b.peer.wait(Duration::from_secs(20)), 76);
    let log = b.peer.stderr();
    let last = log.lines().last().unwrap();
    for says in [
        format!("genesis record {id}"),
        format!("{}", state.join("genesis.json").display()),
        record["founded_at"].as_str().unwrap().to_owned(),
        record["founders"][0].as_str().unwrap().to_owned(),
        format!("--refound {id}"),
    ] {
        assert!(last.contains(&says), "{says:?} missing: {last}");
    }
    assert_eq!(b.daemon_runs(&state), 0);
    assert_eq!(
        fs::read_dir(&state).unwrap().count(),
        2,
        "only genesis.json and slots/: nothing written"
    );

    // Another secret: refused before anything else.
    let other = setup.clone().env("CLUSTER_SECRET", &"ab".repeat(32));
    b.peer.start(&other);
    assert_eq!(b.peer.wait(Duration::from_secs(20)), 78);
    assert!(b.peer.stderr().contains("is not the secret of the cluster founded in"));
    // ... also by a new peer, before `init` writes anything in its slot.
    let mut c = SlotPeer::new(&tmp.0, &state, "c", &mut net, 3);
    c.peer
        .start(&c.setup(&state, "crdt").env("CLUSTER_SECRET", &"ab".repeat(32)));
    assert_eq!(c.peer.wait(Duration::from_secs(20)), 78);
    assert!(!c.slot_dir(&state).join("cluster/service.json").exists());
    drop(c);

    // --refound with another ID is ignored; with the record's, a new cluster.
    b.peer.start(&setup.clone().arg(&["--refound", "00000000000000ff"]));
    assert_eq!(b.peer.wait(Duration::from_secs(20)), 76);
    b.peer.start(&setup.clone().arg(&["--refound", &id]));
    b.wait_daemon_runs(&state, 1, Duration::from_secs(20));
    b.peer.stop();
    let next: Value =
        serde_json::from_str(&fs::read_to_string(state.join(format!("genesis-after-{id}.json"))).unwrap()).unwrap();
    assert_eq!(next["supersedes"], id.as_str());
    assert_ne!(next["founders"], record["founders"]);
    assert!(
        fs::read_to_string(state.join("genesis.json")).unwrap().contains(&id),
        "the old record stays"
    );
}

/// A record created while a peer waits (its founder died before its daemon
/// was seen) is read on the next round: the peer ends with "cluster lost"
/// (76), naming the record, not with "too few peers" (75).
#[test]
fn a_record_that_appears_while_waiting_is_decided_with() {
    if !crate::support::testbed_ready() {
        return;
    }
    use ipfs_cluster_bootstrap::genesis::{create, secret_hash, Draft};
    use ipfs_cluster_bootstrap::peer::{Consensus, PeerId};
    let tmp = TempDir::new("appears");
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let mut net = Net::new();
    let mut a = SlotPeer::new(&tmp.0, &state, "a", &mut net, 3);
    // --expect 2 and alone: it waits for more peers.
    let setup = a.setup(&state, "crdt").arg(&["--expect", "2", "--timeout", "4s"]);
    a.peer.start(&setup);
    std::thread::sleep(Duration::from_millis(1500));
    let founder = PeerId::parse("12D3KooWHEZ3YnZWcqrE91bnCGJZsUS3njYBJEh7QGK3NwzrGEKn").unwrap();
    let secret: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&crate::support::peer::SECRET[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let hash = secret_hash(&secret);
    let draft = Draft {
        consensus: Consensus::Crdt,
        founders: std::slice::from_ref(&founder),
        secret_sha256: &hash,
        founded_by: "another-task",
        supersedes: None,
    };
    create(&state, &draft).unwrap();
    assert_eq!(a.peer.wait(Duration::from_secs(20)), 76, "{}", a.peer.stderr());
    let log = a.peer.stderr();
    assert!(log.contains("a genesis record appeared while deciding"), "{log}");
    assert!(log.lines().last().unwrap().contains(founder.as_str()), "{log}");
}

/// A slot whose peer left the raft peerset at a scale-in but was stopped
/// before its daemon cleaned its raft folder: the next run moves that stale
/// state away (starting on it would never become ready), marks the slot
/// `rejoining`, and founds nothing although the genesis record names it:
/// with no live peer to join it waits, and exits 76.
#[test]
fn a_retired_slots_stale_raft_state_is_moved_away_and_it_never_founds() {
    if !crate::support::testbed_ready() {
        return;
    }
    let tmp = TempDir::new("retired");
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let mut net = Net::new();
    let mut a = SlotPeer::new(&tmp.0, &state, "a", &mut net, 3);
    let setup = a.setup(&state, "raft");
    a.peer.start(&setup);
    a.wait_daemon_runs(&state, 1, Duration::from_secs(20));
    a.peer.stop();
    let cluster = a.slot_dir(&state).join("cluster");
    let record: Value = serde_json::from_str(&fs::read_to_string(state.join("genesis.json")).unwrap()).unwrap();
    let me: Value = serde_json::from_str(&fs::read_to_string(cluster.join("identity.json")).unwrap()).unwrap();
    assert_eq!(record["founders"], serde_json::json!([me["id"]]));
    // Removed at a scale-in, stopped before the daemon moved its raft folder.
    fs::create_dir_all(cluster.join("raft")).unwrap();
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/raft/has-log/raft.db"),
        cluster.join("raft/raft.db"),
    )
    .unwrap();
    fs::write(
        cluster.join("retired.json"),
        r#"{"peer":"x","at":"2026-11-30T00:00:00Z"}"#,
    )
    .unwrap();

    a.peer.start(&setup);
    assert_eq!(a.peer.wait(Duration::from_secs(20)), 76, "{}", a.peer.stderr());
    assert_eq!(a.daemon_runs(&state), 1, "no daemon started");
    assert!(!cluster.join("raft").exists(), "the stale raft folder moved away");
    let aside: Vec<String> = fs::read_dir(&cluster)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("raft.retired-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(cluster.join(&aside[0]).join("raft.db").exists());
    let marker: Value = serde_json::from_str(&fs::read_to_string(cluster.join("retired.json")).unwrap()).unwrap();
    assert_eq!(marker["rejoining"], true);
    assert!(a.peer.stderr().contains("its stale raft state moved away"));
}

/// Under --supervise the cluster container's watchdog fences with SIGUSR1:
/// the supervisor passes the daemon a SIGTERM at once, without the scale-in
/// retirement a SIGTERM from ECS would run (on the storage that failed).
#[test]
fn a_supervised_daemon_is_fenced_past_the_scale_in_hook() {
    if !crate::support::testbed_ready() {
        return;
    }
    let tmp = TempDir::new("fence-supervised");
    let state = tmp.0.join("state");
    fs::create_dir_all(&state).unwrap();
    let mut net = Net::new();
    let mut a = SlotPeer::new(&tmp.0, &state, "a", &mut net, 1);
    let setup = a
        .setup(&state, "raft")
        .arg(&["--supervise", "--watchdog-interval", "200ms", "--timeout", "20s"]);
    a.peer.start(&setup);
    a.wait_daemon_runs(&state, 1, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    fs::remove_file(a.slot_dir(&state).join("peer.lock")).unwrap();
    let t = Instant::now();
    a.peer.wait(Duration::from_secs(10));
    assert!(t.elapsed() < Duration::from_secs(5), "fenced in {:?}", t.elapsed());
    let log = a.peer.stderr();
    assert!(log.contains("the slot lock's watchdog fences"), "{log}");
    assert!(!log.contains("scale-in"), "{log}");
}
