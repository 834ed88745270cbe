//! `slot`, kubo's container: claim this task's slot under the state root and
//! hold it while kubo runs (see `stateroot::slot_main`).

use crate::config::{Config, Expect};
use crate::ecs::Ecs;
use crate::exit::Error;
use crate::selfaddr;
use crate::stateroot;

/// The `slot` mode (kubo's container): how many slots, then `stateroot`.
pub(super) async fn main(cfg: &Config) -> Result<i32, Error> {
    let root = cfg
        .state_root
        .clone()
        .ok_or_else(|| Error::usage("the slot mode needs --state-root (BOOTSTRAP_STATE_ROOT)"))?;
    let task = selfaddr::task(cfg.metadata_uri.as_deref(), cfg.loopback_only).await?;
    let count = match cfg.expect {
        Expect::Count(n) => n,
        Expect::Auto => {
            let sdk = super::load_sdk(cfg, task.as_ref()).await?;
            let cluster = super::ecs_cluster(cfg, task.as_ref()).ok_or_else(|| {
                Error::usage(
                    "--expect auto needs the ECS cluster: run in ECS or set --ecs-cluster (BOOTSTRAP_ECS_CLUSTER)",
                )
            })?;
            let ecs = Ecs::new(&sdk, cluster);
            super::resolve_expect(cfg, Some(&ecs), task.as_ref()).await?
        }
    };
    let name = stateroot::task_name(task.as_ref().map(|t| t.id.as_str()));
    stateroot::slot_main(cfg, &root, count, &name).await
}
