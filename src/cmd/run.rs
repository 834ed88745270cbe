//! `run`: the flow of ARCHITECTURE.md, one method a step. Prepare the local
//! peer, register, decide in rounds (creating the genesis record when it
//! founds), apply the decision to the files, launch the daemon.
//! `plan` shares the preparation and decides once (`plan.rs`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::local_peer;
use super::record::Record;
use super::signals::{or_interrupted, retry, Stop};
use crate::apply;
use crate::config::Config;
use crate::contact::{ContactPoint, Greeting};
use crate::decide::{self, Action, Decision, Facts, Founded, Me, Reason};
use crate::discovery::attributes::{self, now_ms};
use crate::discovery::Registry;
use crate::ecs::Ecs;
use crate::exit::Error;
use crate::genesis::Genesis;
use crate::launch;
use crate::local::{self, LocalPeer};
use crate::peer::Consensus;
use crate::probe::Prober;
use crate::rounds::{self, Next, Round, Rounds};
use crate::selfaddr::{SelfAddr, Task};
use crate::slot::Lock;
use crate::stateroot;
use crate::view::Registration;

/// One run of the sidecar, from its local peer to its daemon.
pub(super) struct Run<'a, R> {
    pub(super) cfg: &'a Config,
    pub(super) registry: &'a R,
    pub(super) prober: &'a Prober,
    ecs: Option<&'a Ecs>,
    /// The slot lock the daemon keeps (--state-root).
    lock: Option<Lock>,
    started: Instant,
    deadline: Instant,
    stop: Stop,
    local: LocalPeer,
    /// Some when this slot's peer left at a scale-in (`true`: its stale
    /// state was just moved aside).
    retired: Option<bool>,
    /// The state root's genesis record, once there is one.
    pub(super) genesis: Option<Genesis>,
    /// The record a `--refound` replaces.
    supersedes: Option<String>,
    /// This peer as it registers.
    pub(super) me: Registration,
    /// The registration is in effect (`confirm_registration`).
    confirmed: bool,
    pub(super) me_facts: Me,
    /// Where the advertised address came from.
    source: &'static str,
    task: Option<Task>,
    pub(super) expect: usize,
}

/// `run`: everything after the shared setup.
pub(super) async fn main<R: Registry>(
    cfg: &Config,
    registry: &R,
    prober: &Prober,
    here: SelfAddr,
    ecs: Option<&Ecs>,
    lock: Option<Lock>,
) -> Result<i32, Error> {
    let mut run = Run::prepare(cfg, registry, prober, here, ecs, lock).await?;
    let contact = run.register().await?;
    // Whatever happens from here on, the registration goes with this run.
    let result = run.registered(contact).await;
    run.deregister().await;
    result
}

impl<'a, R: Registry> Run<'a, R> {
    /// The local peer (after `init`), its genesis record, `--expect`, and
    /// its registration with its founding rank.
    pub(super) async fn prepare(
        cfg: &'a Config,
        registry: &'a R,
        prober: &'a Prober,
        here: SelfAddr,
        ecs: Option<&'a Ecs>,
        lock: Option<Lock>,
    ) -> Result<Self, Error> {
        let started = Instant::now();
        let read_only = cfg.read_only();
        // The state root's genesis record, read once: checked before `init`
        // writes anything, then against the local peer.
        let current = match &cfg.state_root {
            Some(root) => crate::genesis::current(root)?,
            None => None,
        };
        stateroot::check_before_init(cfg, current.as_ref())?;
        let mut local = local_peer::prepare(cfg, read_only)?;
        let retired = stateroot::settle_retired(cfg, &local)?;
        if retired == Some(true) {
            local = local_peer::prepare(cfg, read_only)?;
        }
        let (genesis, supersedes) = stateroot::read_genesis(cfg, current, &local)?;
        let SelfAddr {
            ip,
            task,
            instance_id: ec2_instance,
            source,
        } = here;
        let expect = super::resolve_expect(cfg, ecs, task.as_ref()).await?;
        let instance_id = cfg
            .instance_id
            .clone()
            .or(ec2_instance)
            .or(task.as_ref().map(|t| t.id.clone()))
            .unwrap_or_else(|| local.peer_id.to_string());
        let mut stop = Stop::new();
        let deadline = started + cfg.timeout;
        let rank = or_interrupted(
            retry("ranking this peer", deadline, &mut stop, || {
                registry.rank(&local.peer_id, ip, now_ms())
            })
            .await,
        )?;
        let me = Registration {
            instance_id,
            peer_id: local.peer_id.clone(),
            ip,
            cluster_port: cfg.cluster_port,
            api_port: cfg.api_port,
            registered_at_ms: rank,
            consensus: Some(local.consensus),
            init_peerset: None,
        };
        info!(peer_id = %me.peer_id, consensus = %local.consensus, has_state = local.has_state, ip = %ip, source, instance_id = %me.instance_id, discovery = registry.name(), "local peer");
        let me_facts = Me {
            peer_id: me.peer_id.clone(),
            ip,
            consensus: local.consensus,
            has_state: local.has_state,
            registered_at_ms: me.registered_at_ms,
        };
        Ok(Run {
            cfg,
            registry,
            prober,
            ecs,
            lock,
            started,
            deadline,
            stop,
            local,
            retired,
            genesis,
            supersedes,
            me,
            confirmed: false,
            me_facts,
            source,
            task,
            expect,
        })
    }

    /// A genesis record as the decision reads it. A peer that left at a
    /// scale-in only joins: it founds nothing, even if the record names it.
    pub(super) fn founded(&self, g: &Genesis) -> Founded {
        let mut f = stateroot::founded(g);
        if self.retired.is_some() {
            f.founders.retain(|p| *p != self.local.peer_id);
        }
        f
    }

    /// The decision record of this run.
    pub(super) fn record<'r>(
        &'r self,
        rounds: u32,
        facts: &'r Facts,
        decision: &'r Decision,
        argv: &[std::ffi::OsString],
    ) -> Record<'r> {
        Record {
            event: "decision",
            discovery: self.registry.name(),
            instance_id: &self.me.instance_id,
            advertise_ip: self.me.ip,
            advertise_source: self.source,
            rounds,
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            facts,
            decision,
            reason_text: decision.reason.to_string(),
            daemon_argv: argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        }
    }

    /// The daemon's argv for `decision`, after logging the run's one decision record.
    fn log_final(&self, rounds: u32, facts: &Facts, decision: &Decision) -> Vec<std::ffi::OsString> {
        let argv = apply::daemon_argv(&self.cfg.daemon_bin, &decision.action, &self.cfg.daemon_args);
        self.record(rounds, facts, decision, &argv).log();
        argv
    }

    /// Opens the contact point, then sends the registration (retried until
    /// --timeout). Its wait until in effect overlaps the first round; see
    /// `confirm_registration`.
    async fn register(&mut self) -> Result<Option<ContactPoint>, Error> {
        let greeting = Greeting::new(&self.me.peer_id, None);
        let contact = ContactPoint::open(self.me.ip, self.cfg.cluster_port, greeting, self.cfg.loopback_only).await;
        let (registry, me) = (self.registry, &self.me);
        or_interrupted(
            retry("registering this peer", self.deadline, &mut self.stop, || {
                registry.start_register(me)
            })
            .await,
        )?;
        Ok(contact)
    }

    /// Waits until the registration is in effect, after the first round's
    /// discovery and probes (they do not need it: this peer's own record is
    /// never a peer) and before any decision is acted on or waited out. A
    /// failed registration is sent again, in full, until --timeout.
    async fn confirm_registration(&mut self) -> Result<(), Error> {
        if self.confirmed {
            return Ok(());
        }
        if let Err(e) = self.registry.registered().await {
            let (registry, me) = (self.registry, &self.me);
            warn!(error = %e, "registering this peer failed; registering again");
            or_interrupted(
                retry("registering this peer", self.deadline, &mut self.stop, || {
                    registry.register(me)
                })
                .await,
            )?;
        }
        self.confirmed = true;
        info!(instance_id = %self.me.instance_id, "registered");
        Ok(())
    }

    /// Decide, apply, launch: what follows a registration.
    async fn registered(&mut self, contact: Option<ContactPoint>) -> Result<i32, Error> {
        let (rounds, facts, decision) = self.decide(contact.as_ref()).await?;
        let argv = self.log_final(rounds, &facts, &decision);
        self.apply(&decision, contact.as_ref()).await?;
        drop(contact);
        self.launch(argv).await
    }

    /// Rounds of discover → probe → decide until the decision is to act
    /// (`Next::Act`); a new founding creates the genesis record first.
    async fn decide(&mut self, contact: Option<&ContactPoint>) -> Result<(u32, Facts, Decision), Error> {
        let cfg = self.cfg;
        let mut rounds = Rounds::new(
            self.me_facts.clone(),
            &self.me,
            self.expect,
            cfg.settle,
            cfg.timeout,
            fastrand::Rng::new(),
        );
        rounds.set_genesis(self.genesis.as_ref().map(|g| self.founded(g)));
        let mut warned: HashSet<String> = HashSet::new();
        let mut last_reason = String::new();
        let started = self.started;
        let since_start = || started.elapsed().as_millis() as u64;
        loop {
            let (facts, decision) = loop {
                // A record another peer created while this one waits (its
                // founder may die before its daemon is seen): decide with it.
                if let (Some(root), None) = (&cfg.state_root, &self.genesis) {
                    if let Some(g) = stateroot::new_genesis(cfg, root, &self.local, self.supersedes.as_deref())? {
                        rounds.set_genesis(Some(self.founded(&g)));
                        self.genesis = Some(g);
                    }
                }
                let pause = match self.registry.discover().await {
                    Err(e) => match rounds.discover_failed(since_start()) {
                        None => return Err(e.into()),
                        Some(pause) => {
                            warn!(error = %e, "discovery failed; retrying (a failed call never counts as 'no peers')");
                            pause
                        }
                    },
                    Ok(found) => {
                        for s in &found.skipped {
                            if warned.insert(s.clone()) {
                                warn!(registration = %s, "ignoring a registration");
                            }
                        }
                        // Only the probes that can change the decision.
                        let (probe, skip): (Vec<_>, Vec<_>) = rounds
                            .others(found)
                            .into_iter()
                            .partition(|c| decide::probe_matters(&self.me_facts, c.peer_id.as_ref()));
                        let mut probed = self.prober.probe_all(probe).await;
                        probed.add_not_probed(
                            skip,
                            "not probed: this raft peer starts on its state whatever the others are",
                        );
                        self.confirm_registration().await?;
                        let Round { facts, decision, next } = rounds.probed(probed, since_start());
                        if let Some(c) = contact {
                            c.propose(Greeting::new(&self.me.peer_id, decision.proposal.as_deref()));
                        }
                        match next {
                            Next::Act => break (facts, decision),
                            Next::Confirm(pause) => {
                                debug!(reason = %decision.reason, "confirming the decision with one more round");
                                pause
                            }
                            Next::GiveUp => return Err(self.give_up(rounds.rounds, &facts, &decision)),
                            Next::Pause(pause) => {
                                let reason = decision.reason.to_string();
                                if reason != last_reason {
                                    info!(reason = %reason, "waiting");
                                    last_reason = reason;
                                } else {
                                    debug!(reason = %reason, round = rounds.rounds, "waiting");
                                }
                                pause
                            }
                        }
                    }
                };
                self.sleep(pause).await?;
            };
            // A new founding (rule 4, no record known) creates the record
            // first; when another record wins, decide again with it. A
            // founding the record allows (rule 3b) or a fixed set in progress
            // (rule 2) creates nothing.
            let founding = matches!(decision.reason, Reason::Founder | Reason::FixedSet { .. });
            let (Some(root), Action::Found { init_peerset }) = (&cfg.state_root, &decision.action) else {
                return Ok((rounds.rounds, facts, decision));
            };
            if !founding || facts.genesis.is_some() {
                return Ok((rounds.rounds, facts, decision));
            }
            let founders = init_peerset.clone().unwrap_or_else(|| vec![self.local.peer_id.clone()]);
            let created = stateroot::create_genesis(
                cfg,
                root,
                &self.local,
                &founders,
                &self.me.instance_id,
                self.supersedes.as_deref(),
            );
            match created {
                Ok(None) => return Ok((rounds.rounds, facts, decision)),
                Ok(Some(g)) => {
                    rounds.set_genesis(Some(self.founded(&g)));
                    self.genesis = Some(g);
                }
                Err(e) => {
                    self.log_final(rounds.rounds, &facts, &decision);
                    return Err(e);
                }
            }
            // Lost the race: the next round decides with the winner's record.
            self.sleep(Duration::from_millis(250)).await?;
        }
    }

    /// The error of a run that waited until --timeout, after its record.
    fn give_up(&self, rounds: u32, facts: &Facts, decision: &Decision) -> Error {
        self.log_final(rounds, facts, decision);
        if let (Reason::ClusterExists { .. }, Some(g)) = (&decision.reason, &self.genesis) {
            return Error::ClusterLost {
                waited: self.cfg.timeout,
                path: g.path.clone(),
                id: g.id.clone(),
                founders: g.founders.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "),
                founded_at: g.founded_at.clone(),
            };
        }
        Error::GaveUp {
            waited: self.cfg.timeout,
            reason: decision.reason.to_string(),
        }
    }

    /// Waits, unless a stop signal comes first.
    async fn sleep(&mut self, d: Duration) -> Result<(), Error> {
        match self.stop.sleep(d).await {
            Some(signal) => Err(Error::Interrupted { signal }),
            None => Ok(()),
        }
    }

    /// Writes the decision to the files (peerstore; a founding set's
    /// init_peerset), and announces and publishes a founding set.
    async fn apply(&mut self, decision: &Decision, contact: Option<&ContactPoint>) -> Result<(), Error> {
        let local = &self.local;
        if apply::write_atomic(&local.peerstore, apply::peerstore_text(&decision.peerstore).as_bytes())? {
            info!(path = %local.peerstore.display(), peers = decision.peerstore.len(), "peerstore written");
        }
        let Action::Found { init_peerset } = &decision.action else {
            return Ok(());
        };
        // Announce the founding (raft: its set; crdt: this peer) to peers
        // still deciding: a raft member founds with the set rather than join
        // one that has no leader yet, and everyone takes this peer as
        // starting, not gone, while its daemon is not yet listening.
        if let Some(c) = contact {
            let me = std::slice::from_ref(&self.me.peer_id);
            c.propose(Greeting::founding(
                &self.me.peer_id,
                init_peerset.as_deref().unwrap_or(me),
            ));
        }
        if let Some(set) = init_peerset {
            if apply::set_init_peerset(&local::service_json(&local.config_dir), set)? {
                info!(peers = set.len(), "service.json consensus.raft.init_peerset written");
            }
            self.publish(set).await?;
        }
        // Keep announcing for one poll interval of the others, so that every
        // peer still waiting sees it before our daemon takes the port.
        if contact.is_some() {
            let linger = rounds::linger(self.cfg.settle, self.cfg.probe_timeout);
            debug!(
                linger_ms = linger.as_millis() as u64,
                "announcing the founding before starting"
            );
            self.sleep(linger).await?;
        }
        Ok(())
    }

    /// Publishes the founding set in this peer's registration, so that a
    /// member starting late keeps to it. Bounded on its own: the founding
    /// decision stands whatever the registry does.
    async fn publish(&mut self, set: &[crate::peer::PeerId]) -> Result<(), Error> {
        if let Err(characters) = attributes::fits(set) {
            warn!(
                peers = set.len(),
                characters,
                "the founding set does not fit one registry attribute ({} characters): not published; late members go by the announcement and the live peers' configuration",
                attributes::MAX_VALUE
            );
            return Ok(());
        }
        let mut published = self.me.clone();
        published.init_peerset = Some(set.to_vec());
        let registry = self.registry;
        let deadline = Instant::now() + Duration::from_secs(10);
        match retry("publishing the founding set", deadline, &mut self.stop, || {
            registry.register(&published)
        })
        .await
        {
            Ok(Ok(())) => self.me = published,
            Ok(Err(e)) => {
                warn!(error = %e, "could not publish the founding set; a late member will go by the announcement and the live peers' configuration")
            }
            Err(signal) => return Err(Error::Interrupted { signal }),
        }
        Ok(())
    }

    /// Execs the daemon, or (`--supervise`) runs it under a supervisor with
    /// scale-in retirement and the reaper. A slot's daemon runs in the
    /// slot's folder, holding its lock, guarded by the watchdog.
    async fn launch(&mut self, argv: Vec<std::ffi::OsString>) -> Result<i32, Error> {
        let cfg = self.cfg;
        let env: Vec<(&'static str, std::ffi::OsString)> = match &cfg.state_root {
            Some(_) => vec![("IPFS_CLUSTER_PATH", cfg.config_dir.clone().into_os_string())],
            None => vec![],
        };
        if let Some(lock) = &self.lock {
            lock.keep_across_exec().map_err(|source| Error::Write {
                path: lock.path().to_owned(),
                source,
            })?;
        }
        // A stop that came while the files were written: the task is going,
        // so no daemon starts (its signal would otherwise be lost with our handler).
        if let Some(signal) = self.stop.pending() {
            return Err(Error::Interrupted { signal });
        }
        if !cfg.supervise {
            info!(argv = ?argv, "exec'ing the daemon");
            return Err(launch::exec(&argv, &env));
        }
        info!(argv = ?argv, "starting the daemon (supervised)");
        let (local, ecs) = (&self.local, self.ecs);
        let retire = match (&cfg.state_root, ecs, local.consensus) {
            (Some(root), Some(ecs), Consensus::Raft) if !cfg.scale_in_timeout.is_zero() => {
                crate::retire::context(cfg, root, ecs, local, self.task.as_ref())
            }
            _ => None,
        };
        let before_stop = retire.as_ref().map(|r| move || crate::retire::on_stop(r));
        let reaper = match (cfg.reap_after, ecs, local.consensus) {
            (Some(grace), Some(ecs), Consensus::Raft) => crate::reaper::context(cfg, ecs, local, grace),
            (Some(_), _, Consensus::Crdt) => {
                info!("--reap-after: crdt has no voters to remove (a stopped peer drops out when its ping metric expires)");
                None
            }
            _ => None,
        };
        // Our signal streams go with it: none is lost between here and there.
        let signals = (self.stop.term.take(), self.stop.int.take());
        let supervised = launch::supervise(&argv, &env, before_stop, signals);
        match &reaper {
            // The reaper never ends on its own; it goes when the daemon does.
            Some(r) => {
                tokio::select! {
                    code = supervised => code,
                    () = crate::reaper::run(r, self.registry) => Ok(0),
                }
            }
            None => supervised.await,
        }
    }

    /// Best effort: leaving the registry on the way out.
    async fn deregister(&self) {
        match tokio::time::timeout(Duration::from_secs(5), self.registry.deregister(&self.me)).await {
            Ok(Ok(())) => info!(instance_id = %self.me.instance_id, "deregistered"),
            Ok(Err(e)) => warn!(error = %e, "could not deregister"),
            Err(_) => warn!("deregistering timed out"),
        }
    }
}
