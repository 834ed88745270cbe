//! `plan` (and `run --dry-run`): the run's preparation, then one round of
//! discover → probe → decide with the view counted as settled. It prints the
//! decision record and registers, writes and starts nothing.

use super::run::Run;
use crate::apply;
use crate::config::Config;
use crate::decide::{decide, Facts};
use crate::discovery::Registry;
use crate::ecs::Ecs;
use crate::exit::Error;
use crate::probe::Prober;
use crate::rounds::Rounds;
use crate::selfaddr::SelfAddr;

pub(super) async fn main<R: Registry>(
    cfg: &Config,
    registry: &R,
    prober: &Prober,
    here: SelfAddr,
    ecs: Option<&Ecs>,
) -> Result<i32, Error> {
    let run = Run::prepare(cfg, registry, prober, here, ecs, None).await?;
    let rounds = Rounds::new(
        run.me_facts.clone(),
        &run.me,
        run.expect,
        cfg.settle,
        cfg.timeout,
        fastrand::Rng::new(),
    );
    let probed = prober.probe_all(rounds.others(registry.discover().await?)).await;
    let settle_ms = cfg.settle.as_millis() as u64;
    let facts = Facts {
        me: run.me_facts.clone(),
        expect: run.expect,
        settle_ms,
        now_ms: settle_ms,
        view_since_ms: 0,
        peers: probed.observed,
        unidentified: probed.unidentified,
        genesis: run.genesis.as_ref().map(|g| run.founded(g)),
    };
    let decision = decide(&facts);
    let argv = apply::daemon_argv(&cfg.daemon_bin, &decision.action, &cfg.daemon_args);
    run.record(1, &facts, &decision, &argv).print();
    Ok(0)
}
