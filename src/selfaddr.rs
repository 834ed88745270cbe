//! This peer's own address and task ID: from --advertise-ip, or from the ECS
//! task metadata endpoint v4 (`$ECS_CONTAINER_METADATA_URI_V4/task`). Knows no peers.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::exit::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelfAddr {
    pub ip: IpAddr,
    /// The ECS task ID (last part of the TaskARN), when running in ECS.
    pub task_id: Option<String>,
    pub source: &'static str,
}

/// The parts of the v4 `/task` document we use. AWS only adds fields: unknown
/// ones are ignored, missing ones default.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TaskMetadata {
    #[serde(rename = "TaskARN")]
    pub task_arn: Option<String>,
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

/// Resolves this peer's address. The metadata endpoint is asked when it is
/// configured, even with --advertise-ip, for the task ID.
pub async fn resolve(
    advertise_ip: Option<IpAddr>,
    metadata_uri: Option<&str>,
    loopback_only: bool,
) -> Result<SelfAddr, Error> {
    let Some(uri) = metadata_uri else {
        return match advertise_ip {
            Some(ip) => Ok(SelfAddr {
                ip,
                task_id: None,
                source: "--advertise-ip",
            }),
            None => Err(Error::usage(
                "no address to advertise: set --advertise-ip (BOOTSTRAP_ADVERTISE_IP), or run in ECS where \
                 ECS_CONTAINER_METADATA_URI_V4 is set",
            )),
        };
    };
    let url = format!("{}/task", uri.trim_end_matches('/'));
    let task = match fetch(&url, loopback_only).await {
        Ok(t) => t,
        Err(e) if advertise_ip.is_some() => {
            tracing::warn!(error = %e, "no task ID from the ECS task metadata; using --advertise-ip");
            TaskMetadata::default()
        }
        Err(e) => return Err(e),
    };
    let task_id = task.task_id();
    if let Some(ip) = advertise_ip {
        return Ok(SelfAddr {
            ip,
            task_id,
            source: "--advertise-ip",
        });
    }
    let ip = task.first_ipv4().ok_or_else(|| Error::Metadata {
        url: url.clone(),
        detail: "lists no IPv4 address for this task's containers (awsvpc networking gives one; otherwise set --advertise-ip)".into(),
        unavailable: false,
    })?;
    if loopback_only && !ip.is_loopback() {
        return Err(Error::usage(format!(
            "the task metadata gives {ip}, not a loopback address, and --loopback-only is set"
        )));
    }
    Ok(SelfAddr {
        ip,
        task_id,
        source: "ECS task metadata",
    })
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
