//! The IAM actions the chosen options need, and the policy document
//! `iam-policy` prints. Pure.

use serde_json::json;

use crate::config::{Config, Discovery, Expect};

/// Every AWS action this configuration may call, sorted.
pub fn actions(cfg: &Config) -> Vec<&'static str> {
    let mut a: Vec<&'static str> = vec![];
    match &cfg.discovery {
        Discovery::CloudMap { service_id, .. } => {
            a.extend([
                "servicediscovery:RegisterInstance",
                "servicediscovery:DeregisterInstance",
                "servicediscovery:GetOperation",
                "servicediscovery:DiscoverInstances",
            ]);
            if service_id.is_none() {
                a.extend(["servicediscovery:ListNamespaces", "servicediscovery:ListServices"]);
            }
        }
        Discovery::Ec2 { register, .. } => {
            a.push("ec2:DescribeInstances");
            if *register {
                a.extend(["ec2:CreateTags", "ec2:DeleteTags"]);
            }
        }
        Discovery::Static { .. } | Discovery::Dns { .. } => {}
    }
    if cfg.expect == Expect::Auto {
        // DescribeTasks: the service of a task whose metadata does not name it (Fargate).
        a.extend(["ecs:DescribeServices", "ecs:DescribeTasks"]);
    }
    if cfg.verify_tasks {
        a.push("ecs:DescribeTasks");
    }
    if cfg.reap_after.is_some() {
        // The reaper: which voters' tasks stopped.
        a.push("ecs:DescribeTasks");
    }
    if cfg.state_root.is_some() && cfg.supervise && !cfg.scale_in_timeout.is_zero() {
        // Scale-in retirement: the desired count, and the task's service.
        a.extend(["ecs:DescribeServices", "ecs:DescribeTasks"]);
    }
    a.sort_unstable();
    a.dedup();
    a
}

/// The task role's policy: `PeerDiscovery` over `*` (Cloud Map data-plane
/// calls and ec2:DescribeInstances support no narrower resource; scope
/// further by hand where your account allows), and for `ec2 --register` a
/// `PeerIdTag` statement that lets the role tag instances with the peer-ID
/// tag key and no other (the `aws:TagKeys` condition).
pub fn policy(cfg: &Config) -> serde_json::Value {
    const TAGGING: [&str; 2] = ["ec2:CreateTags", "ec2:DeleteTags"];
    let all = actions(cfg);
    let (tagging, rest): (Vec<&str>, Vec<&str>) = all.into_iter().partition(|a| TAGGING.contains(a));
    let mut statements = vec![];
    if !rest.is_empty() {
        statements.push(json!({"Sid": "PeerDiscovery", "Effect": "Allow", "Action": rest, "Resource": "*"}));
    }
    if let (false, Discovery::Ec2 { peer_id_tag, .. }) = (tagging.is_empty(), &cfg.discovery) {
        statements.push(json!({
            "Sid": "PeerIdTag",
            "Effect": "Allow",
            "Action": tagging,
            "Resource": "arn:aws:ec2:*:*:instance/*",
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": [peer_id_tag]}}
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn cfg(args: &[&str]) -> Config {
        let mut argv = vec!["ipfs-cluster-bootstrap", "iam-policy"];
        argv.extend_from_slice(args);
        Config::new(Cli::try_parse_from(argv).unwrap(), &|k| {
            (k == "HOME").then(|| "/h".into())
        })
        .unwrap()
    }

    #[test]
    fn per_mode() {
        let cm = ["--cloudmap-namespace", "n", "--cloudmap-service", "s"];
        assert_eq!(actions(&cfg(&cm)).len(), 6);
        let mut with_id = cm.to_vec();
        with_id.extend(["--cloudmap-service-id", "srv-1", "--verify-tasks", "--expect", "auto"]);
        assert_eq!(
            actions(&cfg(&with_id)),
            vec![
                "ecs:DescribeServices",
                "ecs:DescribeTasks",
                "servicediscovery:DeregisterInstance",
                "servicediscovery:DiscoverInstances",
                "servicediscovery:GetOperation",
                "servicediscovery:RegisterInstance",
            ]
        );
        assert_eq!(
            actions(&cfg(&["--discovery", "ec2", "--ec2-tag", "a=b"])),
            vec!["ec2:DescribeInstances"]
        );
        assert_eq!(
            actions(&cfg(&["--discovery", "ec2", "--ec2-tag", "a=b", "--register"])).len(),
            3
        );
        // Tagging only the instance, only with the peer-ID tag key.
        let p = policy(&cfg(&["--discovery", "ec2", "--ec2-tag", "a=b", "--register"]));
        assert_eq!(p["Statement"][0]["Action"], json!(["ec2:DescribeInstances"]));
        assert_eq!(p["Statement"][1]["Action"], json!(["ec2:CreateTags", "ec2:DeleteTags"]));
        assert_eq!(
            p["Statement"][1]["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
            json!(["ipfs-cluster:peer-id"])
        );
        assert_eq!(p["Statement"][1]["Resource"], "arn:aws:ec2:*:*:instance/*");
        assert!(actions(&cfg(&["--discovery", "dns", "--dns-name", "x"])).is_empty());
        // Inputs that do not change the policy are not asked for.
        assert_eq!(
            actions(&cfg(&["--cloudmap-service-id", "srv-1"])),
            actions(&cfg(&[
                "--cloudmap-service-id",
                "srv-1",
                "--cloudmap-namespace",
                "n",
                "--cloudmap-service",
                "s"
            ]))
        );
        assert!(actions(&cfg(&["--discovery", "static"])).is_empty());
        assert_eq!(
            actions(&cfg(&["--discovery", "ec2", "--register"])),
            vec!["ec2:CreateTags", "ec2:DeleteTags", "ec2:DescribeInstances"]
        );
        let p = policy(&cfg(&["--discovery", "dns", "--dns-name", "x"]));
        assert_eq!(p["Statement"], json!([]));
    }
}
