//! The ECS API, for what discovery needs from it: the service's desired count
//! (`--expect auto`) and which tasks are running (`--verify-tasks`). Says what
//! ECS answers; decides nothing.

use crate::discovery::sdk_error;
use std::collections::HashSet;

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::Client;

use crate::discovery::{DiscoveryError, ErrorKind};

/// DescribeTasks takes at most this many tasks per call.
pub const TASKS_PER_CALL: usize = 100;

/// What ECS says of a list of tasks (IDs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TaskStates {
    pub running: HashSet<String>,
    pub stopped: HashSet<String>,
}

/// What DescribeServices says of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceState {
    pub desired: usize,
    /// More than one while a rolling update replaces tasks.
    pub deployments: usize,
}

#[derive(Clone)]
pub struct Ecs {
    client: Client,
    cluster: String,
}

fn error<E, R>(action: &'static str, e: SdkError<E, R>) -> DiscoveryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    sdk_error("ecs", action, e)
}

fn other(action: &'static str, kind: ErrorKind, detail: String) -> DiscoveryError {
    DiscoveryError {
        backend: "ecs",
        action,
        kind,
        detail,
    }
}

impl Ecs {
    pub fn new(sdk: &aws_config::SdkConfig, cluster: String) -> Ecs {
        Ecs {
            client: Client::new(sdk),
            cluster,
        }
    }

    /// The service's desiredCount.
    pub async fn desired_count(&self, service: &str) -> Result<usize, DiscoveryError> {
        Ok(self.service_state(service).await?.desired)
    }

    /// The service's desiredCount and its number of deployments.
    pub async fn service_state(&self, service: &str) -> Result<ServiceState, DiscoveryError> {
        const ACTION: &str = "ecs:DescribeServices";
        let out = self
            .client
            .describe_services()
            .cluster(&self.cluster)
            .services(service)
            .send()
            .await
            .map_err(|e| error(ACTION, e))?;
        let svc = out.services().first().ok_or_else(|| {
            let why = out
                .failures()
                .first()
                .and_then(|f| f.reason())
                .unwrap_or("not found")
                .to_owned();
            other(
                ACTION,
                ErrorKind::NotFound,
                format!("service {service:?} in cluster {:?}: {why}", self.cluster),
            )
        })?;
        let desired = usize::try_from(svc.desired_count())
            .map_err(|_| other(ACTION, ErrorKind::Other, "negative desiredCount".into()))?;
        Ok(ServiceState {
            desired,
            deployments: svc.deployments().len(),
        })
    }

    /// The service a task belongs to (its group `service:NAME`).
    pub async fn service_of(&self, task_arn: &str) -> Result<Option<String>, DiscoveryError> {
        let out = self
            .client
            .describe_tasks()
            .cluster(&self.cluster)
            .tasks(task_arn)
            .send()
            .await
            .map_err(|e| error("ecs:DescribeTasks", e))?;
        Ok(out
            .tasks()
            .first()
            .and_then(|t| t.group())
            .and_then(|g| g.strip_prefix("service:"))
            .map(str::to_owned))
    }

    /// Of these task IDs or ARNs, the IDs of those whose lastStatus is RUNNING,
    /// and of those that are STOPPED. Tasks ECS does not know (MISSING: it
    /// forgets stopped ones after about an hour, and knows no other cluster's)
    /// are neither.
    pub async fn states(&self, tasks: &[String]) -> Result<TaskStates, DiscoveryError> {
        let mut states = TaskStates::default();
        let id = |arn: &str| arn.rsplit('/').next().unwrap_or(arn).to_owned();
        for chunk in tasks.chunks(TASKS_PER_CALL) {
            let out = self
                .client
                .describe_tasks()
                .cluster(&self.cluster)
                .set_tasks(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| error("ecs:DescribeTasks", e))?;
            for t in out.tasks() {
                let Some(arn) = t.task_arn() else { continue };
                match t.last_status() {
                    Some("RUNNING") => {
                        states.running.insert(id(arn));
                    }
                    Some("STOPPED") => {
                        states.stopped.insert(id(arn));
                    }
                    _ => {}
                }
            }
        }
        Ok(states)
    }
}
