//! EC2 tags: the running instances that carry every `--ec2-tag` (several
//! values of one key: any of them, as EC2 filters do), optionally in one VPC.
//! The founding order is the instance launch time. A peer's ID is its
//! instance's peer-ID tag (written by `--register`), else what it answers.

use super::sdk_error;
use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::types::{Filter, Instance, Tag};
use aws_sdk_ec2::Client;

use super::{Candidate, Discovered, DiscoveryError, ErrorKind, Registry};
use crate::peer::PeerId;
use crate::selfaddr::Ec2Address;
use crate::view::Registration;

/// Page size of DescribeInstances (always paginated: unpaginated, unfiltered
/// calls use EC2's smaller throttling bucket).
pub const PAGE_SIZE: i32 = 100;

pub struct Ec2Tags {
    client: Client,
    /// Tag key → accepted values.
    tags: BTreeMap<String, Vec<String>>,
    vpc_id: Option<String>,
    address: Ec2Address,
    peer_id_tag: String,
    /// Tag this instance with its peer ID.
    register: bool,
    instance_id: String,
    cluster_port: u16,
    api_port: u16,
}

fn error<E, R>(action: &'static str, e: SdkError<E, R>) -> DiscoveryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    sdk_error("ec2", action, e)
}

impl Ec2Tags {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sdk: &aws_config::SdkConfig,
        tags: BTreeMap<String, Vec<String>>,
        vpc_id: Option<String>,
        address: Ec2Address,
        peer_id_tag: String,
        register: bool,
        instance_id: String,
        cluster_port: u16,
        api_port: u16,
    ) -> Ec2Tags {
        Ec2Tags {
            client: Client::new(sdk),
            tags,
            vpc_id,
            address,
            peer_id_tag,
            register,
            instance_id,
            cluster_port,
            api_port,
        }
    }

    fn filters(&self) -> Vec<Filter> {
        let mut f: Vec<Filter> = self
            .tags
            .iter()
            .map(|(k, vs)| {
                Filter::builder()
                    .name(format!("tag:{k}"))
                    .set_values(Some(vs.clone()))
                    .build()
            })
            .collect();
        f.push(Filter::builder().name("instance-state-name").values("running").build());
        if let Some(vpc) = &self.vpc_id {
            f.push(Filter::builder().name("vpc-id").values(vpc).build());
        }
        f
    }

    fn candidate(&self, i: &Instance) -> Result<Candidate, String> {
        let id = i.instance_id().unwrap_or_default();
        let addr = match self.address {
            Ec2Address::Private => i.private_ip_address(),
            Ec2Address::Public => i.public_ip_address(),
        };
        let ip: IpAddr = addr
            .ok_or_else(|| format!("instance {id} has no {:?} address", self.address))?
            .parse()
            .map_err(|_| format!("instance {id}: address {addr:?} is not an IP"))?;
        let peer_id = match i.tags().iter().find(|t| t.key() == Some(self.peer_id_tag.as_str())) {
            None => None,
            Some(t) => Some(
                PeerId::parse(t.value().unwrap_or_default())
                    .map_err(|e| format!("instance {id}: tag {}: {e}", self.peer_id_tag))?,
            ),
        };
        let launched = i
            .launch_time()
            .map(|t| t.to_millis().unwrap_or(0).max(0) as u64)
            .unwrap_or(u64::MAX);
        Ok(Candidate {
            instance_id: id.to_owned(),
            peer_id,
            ip,
            cluster_port: self.cluster_port,
            api_port: self.api_port,
            rank: launched,
            consensus: None,
            init_peerset: None,
            // Listed by EC2 as running now (the instance-state-name filter).
            vouched: true,
        })
    }
}

impl Registry for Ec2Tags {
    fn name(&self) -> &'static str {
        "ec2"
    }

    /// This instance's launch time.
    async fn rank(&self, _me: &PeerId, _ip: IpAddr, _now_ms: u64) -> Result<u64, DiscoveryError> {
        let out = self
            .client
            .describe_instances()
            .instance_ids(&self.instance_id)
            .send()
            .await
            .map_err(|e| error("ec2:DescribeInstances", e))?;
        let launched = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.launch_time())
            .map(|t| t.to_millis().unwrap_or(0).max(0) as u64);
        launched.ok_or_else(|| DiscoveryError {
            backend: "ec2",
            action: "ec2:DescribeInstances",
            kind: ErrorKind::NotFound,
            detail: format!("this instance {} is not listed", self.instance_id),
        })
    }

    async fn start_register(&self, me: &Registration) -> Result<(), DiscoveryError> {
        if !self.register {
            return Ok(());
        }
        let tag = Tag::builder().key(&self.peer_id_tag).value(me.peer_id.as_str()).build();
        self.client
            .create_tags()
            .resources(&self.instance_id)
            .tags(tag)
            .send()
            .await
            .map_err(|e| error("ec2:CreateTags", e))?;
        Ok(())
    }

    /// Removes the peer-ID tag, only if it still names this peer.
    async fn deregister(&self, me: &Registration) -> Result<(), DiscoveryError> {
        if !self.register {
            return Ok(());
        }
        let tag = Tag::builder().key(&self.peer_id_tag).value(me.peer_id.as_str()).build();
        self.client
            .delete_tags()
            .resources(&self.instance_id)
            .tags(tag)
            .send()
            .await
            .map_err(|e| error("ec2:DeleteTags", e))?;
        Ok(())
    }

    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let mut found = Discovered::default();
        let mut pages = self
            .client
            .describe_instances()
            .set_filters(Some(self.filters()))
            .max_results(PAGE_SIZE)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("ec2:DescribeInstances", e))?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                match self.candidate(i) {
                    Ok(c) => found.registrations.push(c),
                    Err(why) => found.skipped.push(why),
                }
            }
        }
        Ok(found)
    }
}
