//! This peer's own address, task and instance: from --advertise-ip, the ECS
//! task metadata endpoint v4 (`$ECS_CONTAINER_METADATA_URI_V4/task`), or EC2's
//! IMDSv2 (for EC2 discovery). Knows no peers.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::exit::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfAddr {
    pub ip: IpAddr,
    /// The ECS task, when running in ECS.
    pub task: Option<Task>,
    /// The EC2 instance ID, when asked from IMDS (EC2 discovery).
    pub instance_id: Option<String>,
    pub source: &'static str,
}

/// What the task metadata says about this task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Task {
    pub arn: String,
    pub id: String,
    pub cluster: Option<String>,
    /// Only newer EC2 agents say; Fargate does not.
    pub service: Option<String>,
    /// The task has its own network interface (awsvpc): its address is not the instance's.
    pub awsvpc: bool,
}

impl Task {
    /// The region in the task's ARN (`arn:aws:ecs:REGION:ACCOUNT:task/…`).
    pub fn region(&self) -> Option<&str> {
        let mut parts = self.arn.split(':');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("arn"), Some(_), Some("ecs"), Some(region)) if !region.is_empty() => Some(region),
            _ => None,
        }
    }
}

/// Which instance address EC2 discovery uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ec2Address {
    Private,
    Public,
}

/// The parts of the v4 `/task` document we use. AWS only adds fields: unknown
/// ones are ignored, missing ones default.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskMetadata {
    #[serde(rename = "TaskARN")]
    pub task_arn: Option<String>,
    #[serde(rename = "Cluster")]
    pub cluster: Option<String>,
    #[serde(rename = "ServiceName")]
    pub service_name: Option<String>,
    #[serde(rename = "Containers")]
    pub containers: Vec<Container>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Container {
    #[serde(rename = "Name")]
    pub name: Option<String>,
    #[serde(rename = "Type")]
    pub kind: Option<String>,
    #[serde(rename = "Networks")]
    pub networks: Vec<Network>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Network {
    #[serde(rename = "NetworkMode")]
    pub mode: Option<String>,
    #[serde(rename = "IPv4Addresses")]
    pub ipv4: Vec<String>,
}

impl TaskMetadata {
    pub fn parse(body: &[u8]) -> Result<TaskMetadata, String> {
        serde_json::from_slice(body).map_err(|e| format!("is not the task metadata JSON: {e}"))
    }

    pub fn task_id(&self) -> Option<String> {
        let arn = self.task_arn.as_deref()?;
        arn.rsplit('/')
            .next()
            .filter(|s| !s.is_empty() && !s.contains(':'))
            .map(str::to_owned)
    }

    pub fn task(&self) -> Option<Task> {
        Some(Task {
            arn: self.task_arn.clone()?,
            id: self.task_id()?,
            cluster: self.cluster.clone().filter(|c| !c.is_empty()),
            service: self.service_name.clone().filter(|s| !s.is_empty()),
            awsvpc: self
                .containers
                .iter()
                .flat_map(|c| &c.networks)
                .any(|n| n.mode.as_deref() == Some("awsvpc")),
        })
    }

    /// The first IPv4 of the task's ordinary containers (with awsvpc, every
    /// container of the task shares it).
    pub fn first_ipv4(&self) -> Option<IpAddr> {
        self.containers
            .iter()
            .filter(|c| c.kind.as_deref().is_none_or(|k| k == "NORMAL"))
            .flat_map(|c| &c.networks)
            .flat_map(|n| &n.ipv4)
            .find_map(|s| s.parse::<IpAddr>().ok().filter(IpAddr::is_ipv4))
    }
}

/// This task's details from the task metadata, when it is configured (for
/// the modes that resolve no address: `health`, `discover`).
pub async fn task(metadata_uri: Option<&str>, loopback_only: bool) -> Result<Option<Task>, Error> {
    let Some(uri) = metadata_uri else { return Ok(None) };
    let url = format!("{}/task", uri.trim_end_matches('/'));
    Ok(fetch(&url, loopback_only).await?.task())
}

/// Resolves this peer's address. The task metadata is asked whenever it is
/// configured (for the task), IMDS when `imds` says which address EC2
/// discovery uses; --advertise-ip wins over both for the address.
#[cfg(feature = "aws")]
pub async fn resolve(
    advertise_ip: Option<IpAddr>,
    metadata_uri: Option<&str>,
    imds: Option<Ec2Address>,
    loopback_only: bool,
) -> Result<SelfAddr, Error> {
    let mut task_meta = None;
    if let Some(uri) = metadata_uri {
        let url = format!("{}/task", uri.trim_end_matches('/'));
        match fetch(&url, loopback_only).await {
            Ok(t) => task_meta = Some((url, t)),
            Err(e) if advertise_ip.is_some() || imds.is_some() => {
                tracing::warn!(error = %e, "no task details from the ECS task metadata");
            }
            Err(e) => return Err(e),
        }
    }
    let task = task_meta.as_ref().and_then(|(_, t)| t.task());
    let mut instance = None;
    if let Some(kind) = imds {
        instance = Some(instance_from_imds(kind).await?);
    }
    let instance_id = instance.as_ref().map(|(id, _)| id.clone());
    let (ip, source) = match (advertise_ip, &instance, &task_meta) {
        (Some(ip), _, _) => (ip, "--advertise-ip"),
        (None, Some((_, ip)), _) => (*ip, "EC2 instance metadata (IMDSv2)"),
        (None, None, Some((url, t))) => {
            let ip = t.first_ipv4().ok_or_else(|| Error::Metadata {
                url: url.clone(),
                detail: "lists no IPv4 address for this task's containers (awsvpc networking gives one; otherwise set --advertise-ip)".into(),
                unavailable: false,
            })?;
            (ip, "ECS task metadata")
        }
        (None, None, None) => {
            return Err(Error::usage(
                "no address to advertise: set --advertise-ip (BOOTSTRAP_ADVERTISE_IP), or run in ECS where \
                 ECS_CONTAINER_METADATA_URI_V4 is set",
            ))
        }
    };
    if loopback_only && !ip.is_loopback() {
        return Err(Error::usage(format!(
            "the {source} gives {ip}, not a loopback address, and --loopback-only is set"
        )));
    }
    Ok(SelfAddr {
        ip,
        task,
        instance_id,
        source,
    })
}

/// This instance's ID and address from IMDSv2 (aws-config's client, which
/// honours AWS_EC2_METADATA_SERVICE_ENDPOINT).
#[cfg(feature = "aws")]
async fn instance_from_imds(kind: Ec2Address) -> Result<(String, IpAddr), Error> {
    let client = aws_config::imds::Client::builder()
        .configure(
            &aws_config::provider_config::ProviderConfig::without_region().with_http_client(crate::aws_http::client()),
        )
        .build();
    let path = match kind {
        Ec2Address::Private => "/latest/meta-data/local-ipv4",
        Ec2Address::Public => "/latest/meta-data/public-ipv4",
    };
    let err = |what: &str, e: aws_config::imds::client::error::ImdsError| {
        let text = aws_sdk_ec2::error::DisplayErrorContext(&e).to_string();
        let hint = if text.contains("timeout") || text.contains("timed out") || text.contains("token") {
            " (inside a container on EC2 the IMDSv2 token answer is dropped unless the instance's metadata hop \
             limit is at least 2: aws ec2 modify-instance-metadata-options --http-put-response-hop-limit 2)"
        } else {
            ""
        };
        Error::Metadata {
            url: format!("IMDSv2 {what}"),
            detail: format!("{text}{hint}"),
            unavailable: true,
        }
    };
    let id: String = client
        .get("/latest/meta-data/instance-id")
        .await
        .map_err(|e| err("instance-id", e))?
        .into();
    let addr: String = client.get(path).await.map_err(|e| err(path, e))?.into();
    let ip = addr.trim().parse::<IpAddr>().map_err(|_| Error::Metadata {
        url: format!("IMDSv2 {path}"),
        detail: format!("{addr:?} is not an IP address"),
        unavailable: false,
    })?;
    Ok((id.trim().to_owned(), ip))
}

async fn fetch(url: &str, loopback_only: bool) -> Result<TaskMetadata, Error> {
    let err = |detail: String, unavailable| Error::Metadata {
        url: url.to_owned(),
        detail,
        unavailable,
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| err(format!("is not a URL: {e}"), false))?;
    if loopback_only {
        let host = parsed
            .host_str()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host_ok = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if !host_ok {
            return Err(Error::usage(format!(
                "ECS_CONTAINER_METADATA_URI_V4 {url} is not a loopback address and --loopback-only is set"
            )));
        }
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| err(e.to_string(), true))?;
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
        }
        match client.get(parsed.clone()).send().await {
            Ok(resp) if resp.status().is_success() => {
                let body = resp.bytes().await.map_err(|e| err(e.to_string(), true))?;
                return TaskMetadata::parse(&body).map_err(|d| err(d, false));
            }
            Ok(resp) => last = format!("answered {}", resp.status()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(err(format!("unreachable after 3 attempts: {last}"), true))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FARGATE: &str = include_str!("../tests/fixtures/task-metadata-fargate.json");

    #[test]
    fn the_region_is_read_from_the_task_arn() {
        let task = |arn: &str| Task {
            arn: arn.into(),
            ..Task::default()
        };
        assert_eq!(
            task("arn:aws:ecs:eu-west-3:123456789012:task/c/0f1e").region(),
            Some("eu-west-3")
        );
        assert_eq!(
            task("arn:aws-cn:ecs:cn-north-1:1:task/abc").region(),
            Some("cn-north-1")
        );
        assert_eq!(task("arn:aws:ecs::1:task/abc").region(), None);
        assert_eq!(task("task/abc").region(), None);
        assert_eq!(task("arn:aws:ec2:us-east-1:1:instance/i-1").region(), None);
    }

    #[test]
    fn parses_the_fargate_example() {
        let t = TaskMetadata::parse(FARGATE.as_bytes()).unwrap();
        assert_eq!(t.task_id().as_deref(), Some("158d1c8083dd49d6b527399fd6414f5c"));
        assert_eq!(t.first_ipv4(), Some("10.0.2.61".parse().unwrap()));
    }

    #[test]
    fn tolerates_missing_fields_and_rejects_garbage() {
        let t = TaskMetadata::parse(
            br#"{"Containers":[{"Type":"CNI_PAUSE","Networks":[{"IPv4Addresses":["10.1.1.1"]}]}]}"#,
        )
        .unwrap();
        assert_eq!((t.task_id(), t.first_ipv4()), (None, None));
        assert!(TaskMetadata::parse(b"<html>").is_err());
        assert!(TaskMetadata::parse(br#"{"Containers": 5}"#).is_err());
    }
}
