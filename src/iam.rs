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

/// The task role's policy: one statement, `PeerDiscovery`, over `*` (Cloud Map
/// data-plane calls and ec2:DescribeInstances support no narrower resource;
/// scope further by hand where your account allows).
pub fn policy(cfg: &Config) -> serde_json::Value {
    let actions = actions(cfg);
    let statements = match actions.is_empty() {
        true => vec![],
        false => vec![json!({"Sid": "PeerDiscovery", "Effect": "Allow", "Action": actions, "Resource": "*"})],
    };
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
        assert!(actions(&cfg(&["--discovery", "dns", "--dns-name", "x"])).is_empty());
        let p = policy(&cfg(&["--discovery", "dns", "--dns-name", "x"]));
        assert_eq!(p["Statement"], json!([]));
    }
}
