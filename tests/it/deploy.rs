//! What the deployment files (docker/Dockerfile, docker/docker-compose.yml
//! and its DNS override, deploy/ecs-task-definition.json,
//! deploy/cloudformation.json) do that the real test bed cannot execute here:
//! what needs AWS (IAM: the task role grants exactly what `iam-policy`
//! prints for the shipped environments; security groups; botocore's
//! RegisterTaskDefinition model; fields only ECS reads) or a Docker engine
//! (the image build, published ports), and that every `BOOTSTRAP_*` name
//! they set is an option. What the files make happen (command lines,
//! environments, health checks, compose's start order and secret) is run on
//! the real daemons by tests/real (test_shipped.py, test_compose.py).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use clap::CommandFactory;
use ipfs_cluster_bootstrap::cli::Cli;
use serde_json::{json, Map, Value};

use crate::support::{bin, root, TempDir};

pub(crate) const DOCKERFILE: &str = "docker/Dockerfile";
const COMPOSE: &str = "docker/docker-compose.yml";
const COMPOSE_DNS: &str = "docker/docker-compose.dns.yml";
pub(crate) const TASK_DEF: &str = "deploy/ecs-task-definition.json";
const TEMPLATE: &str = "deploy/cloudformation.json";
/// The image puts the binary here (Dockerfile COPY) and every health check runs it.
pub(crate) const BIN_IN_IMAGE: &str = "/usr/local/bin/ipfs-cluster-bootstrap";
/// A well-formed stand-in for CLUSTER_SECRET (compose interpolation, Secrets Manager).
const SECRET: &str = "2588b80d5cb05374fa142aed6cbb047d1f4ef8ef15e37eba68c65b9d30df67ed";

// ---------------------------------------------------------------- reading

fn text(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

pub(crate) fn json_file(rel: &str) -> Value {
    serde_json::from_str(&text(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

fn yaml_file(rel: &str) -> Value {
    let docs = yaml_rust2::YamlLoader::load_from_str(&text(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{rel}: one YAML document");
    yaml_to_json(&docs[0])
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(s) | Yaml::String(s) => Value::String(s.clone()),
        Yaml::Integer(i) => json!(i),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => Value::Array(a.iter().map(yaml_to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| (scalar(&yaml_to_json(k)).expect("scalar mapping key"), yaml_to_json(v)))
                .collect(),
        ),
        Yaml::Null => Value::Null,
        Yaml::Alias(_) | Yaml::BadValue => panic!("unsupported YAML node {y:?}"),
    }
}

/// A scalar as the string a container sees (compose turns numbers into strings).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {v}"))
}

fn arr<'a>(v: &'a Value, what: &str) -> &'a Vec<Value> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what}: expected a list, got {v}"))
}

fn obj<'a>(v: &'a Value, what: &str) -> &'a Map<String, Value> {
    v.as_object()
        .unwrap_or_else(|| panic!("{what}: expected a mapping, got {v}"))
}

// ---------------------------------------------------------------- the binary

/// Every environment variable the command line reads.
fn option_vars() -> BTreeSet<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_str().unwrap().to_string())
        .collect()
}

fn default_port(id: &str) -> u16 {
    let cmd = Cli::command();
    let arg = cmd
        .get_arguments()
        .find(|a| a.get_id() == id)
        .unwrap_or_else(|| panic!("no option {id}"));
    arg.get_default_values()[0].to_str().unwrap().parse().unwrap()
}

/// Runs `ipfs-cluster-bootstrap iam-policy ARGS` with exactly `env` (plus HOME):
/// the policy it prints, or its exit code and stderr.
fn iam_policy(args: &[&str], env: &BTreeMap<String, String>) -> Result<Value, String> {
    let home = TempDir::new("deploy-home");
    let out = Command::new(bin())
        .arg("iam-policy")
        .args(args)
        .env_clear()
        .env("HOME", &home.0)
        .envs(env)
        .output()
        .expect("run the binary");
    if !out.status.success() {
        return Err(format!(
            "iam-policy exited {:?}: {}{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "iam-policy printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn sorted_actions(statement: &Value) -> Vec<String> {
    let mut a: Vec<String> = match &statement["Action"] {
        Value::String(one) => vec![one.clone()],
        list => arr(list, "Action").iter().map(|x| s(x, "action").to_string()).collect(),
    };
    a.sort();
    a
}

fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
    arr(&policy["Statement"], "Statement")
        .iter()
        .find(|st| st["Sid"] == sid)
        .unwrap_or_else(|| panic!("no statement {sid} in {policy:#}"))
}

// ---------------------------------------------------------------- Dockerfile

/// The Dockerfile's instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = vec![];
    let mut cur = String::new();
    for line in text(DOCKERFILE).lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => cur.push_str(part),
            None => {
                cur.push_str(t);
                let (ins, rest) = cur.trim().split_once(char::is_whitespace).unwrap_or((cur.trim(), ""));
                out.push((ins.to_uppercase(), rest.trim().to_string()));
                cur.clear();
            }
        }
    }
    out
}

pub(crate) fn instruction(ins: &str) -> Vec<String> {
    dockerfile()
        .into_iter()
        .filter(|(i, _)| i == ins)
        .map(|(_, r)| r)
        .collect()
}

pub(crate) fn exec_form(rest: &str, what: &str) -> Vec<String> {
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{what} is not in exec (JSON) form: {rest}: {e}"))
}

// ---------------------------------------------------------------- compose

struct Compose {
    doc: Value,
}

impl Compose {
    fn base() -> Compose {
        Compose {
            doc: yaml_file(COMPOSE),
        }
    }

    fn services(&self) -> &Map<String, Value> {
        obj(&self.doc["services"], "services")
    }

    /// The services built from docker/Dockerfile: the cluster peers.
    fn clusters(&self) -> Vec<(&String, &Value)> {
        let c: Vec<_> = self
            .services()
            .iter()
            .filter(|(_, v)| v["build"]["dockerfile"] == "docker/Dockerfile")
            .collect();
        assert!(!c.is_empty(), "no service builds docker/Dockerfile");
        c
    }

    fn env(svc: &Value) -> BTreeMap<String, String> {
        match &svc["environment"] {
            Value::Null => BTreeMap::new(),
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_else(|| panic!("{k}: not a scalar"))))
                .collect(),
            Value::Array(a) => a
                .iter()
                .map(|e| {
                    let e = s(e, "environment entry");
                    let (k, v) = e.split_once('=').unwrap_or((e, ""));
                    (k.to_string(), v.to_string())
                })
                .collect(),
            other => panic!("environment: {other}"),
        }
    }
}

/// The TCP port of a multiaddr such as /ip4/0.0.0.0/tcp/9094.
fn tcp_port(multiaddr: &str) -> u16 {
    let parts: Vec<&str> = multiaddr.split('/').collect();
    let i = parts
        .iter()
        .position(|p| *p == "tcp")
        .unwrap_or_else(|| panic!("{multiaddr}: no /tcp/"));
    parts[i + 1].parse().unwrap()
}

// ---------------------------------------------------------------- ECS

/// Reads a task definition's container by name.
pub(crate) fn container<'a>(td: &'a Value, name: &str) -> &'a Value {
    arr(&td["containerDefinitions"], "containerDefinitions")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

pub(crate) fn ecs_env(c: &Value) -> BTreeMap<String, String> {
    c["environment"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| (s(&e["name"], "name").to_string(), s(&e["value"], "value").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The ipfs-cluster container's environment at run time: its `environment`,
/// placeholders for its `secrets`, and the image's IPFS_CLUSTER_PATH.
pub(crate) fn ecs_container_env(c: &Value) -> BTreeMap<String, String> {
    let mut env = ecs_env(c);
    for sec in arr(&c["secrets"], "secrets") {
        let name = s(&sec["name"], "secret name");
        let v = if name == "CLUSTER_SECRET" {
            SECRET
        } else {
            "admin:password"
        };
        env.insert(name.into(), v.into());
    }
    env.insert("IPFS_CLUSTER_PATH".into(), "/data/ipfs-cluster".into());
    env
}

fn port_mappings(c: &Value) -> BTreeSet<(u64, String)> {
    arr(&c["portMappings"], "portMappings")
        .iter()
        .map(|p| {
            (
                p["containerPort"].as_u64().unwrap(),
                p["protocol"].as_str().unwrap_or("tcp").to_string(),
            )
        })
        .collect()
}

// ---------------------------------------------------------------- CloudFormation

struct Template {
    t: Value,
}

const PSEUDO: [(&str, &str); 5] = [
    ("AWS::Region", "us-east-1"),
    ("AWS::AccountId", "123456789012"),
    ("AWS::StackName", "ipfs"),
    ("AWS::Partition", "aws"),
    ("AWS::URLSuffix", "amazonaws.com"),
];

impl Template {
    fn load() -> Template {
        let t = json_file(TEMPLATE);
        assert_eq!(t["AWSTemplateFormatVersion"], "2010-09-09");
        Template { t }
    }

    fn resources(&self) -> &Map<String, Value> {
        obj(&self.t["Resources"], "Resources")
    }

    fn of_type(&self, ty: &str) -> Vec<(&String, &Value)> {
        self.resources().iter().filter(|(_, r)| r["Type"] == ty).collect()
    }

    fn one(&self, ty: &str) -> (&String, &Value) {
        let r = self.of_type(ty);
        assert_eq!(r.len(), 1, "one {ty}");
        r[0]
    }

    /// The value of `Ref name` at deploy time, with parameter defaults and stand-ins.
    fn r#ref(&self, name: &str) -> Value {
        if let Some((_, v)) = PSEUDO.iter().find(|(k, _)| *k == name) {
            return json!(v);
        }
        if let Some(p) = self.t["Parameters"].get(name) {
            return match (&p["Default"], p["Type"].as_str()) {
                (Value::Null, _) => json!(format!("<{name}>")),
                (d, Some("Number")) => json!(scalar(d).unwrap().parse::<i64>().unwrap()),
                (d, _) => d.clone(),
            };
        }
        assert!(
            self.resources().contains_key(name),
            "Ref {name}: no such parameter or resource"
        );
        json!(format!("<{name}>"))
    }

    fn get_att(&self, res: &str, att: &str) -> Value {
        let r = self
            .resources()
            .get(res)
            .unwrap_or_else(|| panic!("GetAtt {res}.{att}: no such resource"));
        match (r["Type"].as_str().unwrap(), att) {
            (_, "Name") if r["Properties"]["Name"] != Value::Null => self.resolve(&r["Properties"]["Name"]),
            ("AWS::ServiceDiscovery::Service", "Id") => json!("srv-0123456789abcdef"),
            ("AWS::ServiceDiscovery::HttpNamespace", "Id") => json!("ns-0123456789abcdef"),
            _ => json!(format!("<{res}.{att}>")),
        }
    }

    /// Replaces Ref, Fn::GetAtt and Fn::Sub by their deploy-time values.
    fn resolve(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) if m.len() == 1 && m.keys().all(|k| k == "Ref" || k.starts_with("Fn::")) => {
                let (k, x) = m.iter().next().unwrap();
                match k.as_str() {
                    "Ref" => self.r#ref(s(x, "Ref")),
                    "Fn::GetAtt" => self.get_att(s(&x[0], "GetAtt"), s(&x[1], "GetAtt")),
                    "Fn::Sub" => {
                        let mut out = String::new();
                        let mut rest = s(x, "Fn::Sub (string form)");
                        while let Some(i) = rest.find("${") {
                            out.push_str(&rest[..i]);
                            let j = rest[i..].find('}').unwrap() + i;
                            let var = &rest[i + 2..j];
                            let val = match var.split_once('.') {
                                Some((r, a)) if !var.starts_with("AWS::") => self.get_att(r, a),
                                _ => self.r#ref(var),
                            };
                            out.push_str(&scalar(&val).unwrap());
                            rest = &rest[j + 1..];
                        }
                        out.push_str(rest);
                        json!(out)
                    }
                    "Fn::Select" => {
                        let i = x[0].as_u64().expect("Fn::Select: a literal index") as usize;
                        match self.resolve(&x[1]) {
                            Value::Array(a) => a
                                .get(i)
                                .cloned()
                                .unwrap_or_else(|| panic!("Fn::Select {i} beyond {a:?}")),
                            // A list parameter without a default: a stand-in per element.
                            Value::String(list) => json!(format!("{list}[{i}]")),
                            other => panic!("Fn::Select from {other}"),
                        }
                    }
                    "Fn::FindInMap" => {
                        let key = scalar(&self.resolve(&x[1])).expect("Fn::FindInMap: a scalar key");
                        let v = &self.t["Mappings"][s(&x[0], "map name")][key.as_str()][s(&x[2], "attribute")];
                        assert!(!v.is_null(), "Fn::FindInMap {x}: no such entry for {key}");
                        v.clone()
                    }
                    other => panic!("intrinsic {other} not resolved by this test"),
                }
            }
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), self.resolve(v))).collect()),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.resolve(v)).collect()),
            other => other.clone(),
        }
    }

    /// The template's task definition as RegisterTaskDefinition input: resolved,
    /// and CloudFormation's PascalCase keys turned into the API's camelCase.
    fn task_definition(&self) -> Value {
        let (_, td) = self.one("AWS::ECS::TaskDefinition");
        camel(&self.resolve(&td["Properties"]), false)
    }

    fn task_role_policy(&self) -> Value {
        let (name, _) = self.one("AWS::ECS::TaskDefinition");
        let td = &self.resources()[name]["Properties"];
        let role = td["TaskRoleArn"]["Fn::GetAtt"][0]
            .as_str()
            .expect("TaskRoleArn: GetAtt of a role");
        let policies = arr(&self.resources()[role]["Properties"]["Policies"], "task role Policies");
        assert_eq!(policies.len(), 1, "the task role has one inline policy");
        assert!(
            self.resources()[role]["Properties"]["ManagedPolicyArns"].is_null(),
            "the task role has no managed policies"
        );
        policies[0]["PolicyDocument"].clone()
    }
}

/// PascalCase keys → camelCase, except the keys of log driver `options`.
fn camel(v: &Value, keep_keys: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let key = match (keep_keys, k.as_str()) {
                        (true, _) => k.clone(),
                        // CloudFormation spells these differently from the API.
                        (false, "EFSVolumeConfiguration") => "efsVolumeConfiguration".into(),
                        (false, "FilesystemId") => "fileSystemId".into(),
                        (false, "IAM") => "iam".into(),
                        (false, _) => k[..1].to_lowercase() + &k[1..],
                    };
                    (key, camel(x, k == "Options"))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| camel(x, false)).collect()),
        other => other.clone(),
    }
}

/// Validates RegisterTaskDefinition input against botocore's ECS model (the
/// test bed's Python, installed by scripts/setup-testbed.sh).
fn botocore_validates(td: &Value, what: &str) {
    if !crate::support::testbed_ready() {
        return;
    }
    let script = r#"
import json, sys
import botocore.session
from botocore.validate import ParamValidator
shape = botocore.session.get_session().get_service_model("ecs").operation_model("RegisterTaskDefinition").input_shape
report = ParamValidator().validate(json.load(sys.stdin), shape)
print(report.generate_report())
sys.exit(1 if report.has_errors() else 0)
"#;
    use std::io::Write;
    let mut child = Command::new(root().join(".venv/bin/python"))
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(td.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} is not valid RegisterTaskDefinition input: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// ================================================================ tests

#[test]
fn every_bootstrap_variable_is_an_option() {
    let known = option_vars();
    for f in [DOCKERFILE, COMPOSE, COMPOSE_DNS, TASK_DEF, TEMPLATE] {
        let t = text(f);
        let mut found = BTreeSet::new();
        let mut rest = t.as_str();
        while let Some(i) = rest.find("BOOTSTRAP_") {
            let name: String = rest[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            found.insert(name.trim_end_matches('_').to_string());
            rest = &rest[i + 10..];
        }
        for name in &found {
            assert!(
                known.contains(name),
                "{f} names {name}, which is no option of ipfs-cluster-bootstrap"
            );
        }
        if f != DOCKERFILE {
            assert!(
                found.contains("BOOTSTRAP_DISCOVERY") || found.contains("BOOTSTRAP_EXPECT"),
                "{f}: {found:?}"
            );
        }
    }
}

#[test]
fn dockerfile_builds_on_musl_and_keeps_the_official_entrypoint_shape() {
    let from = instruction("FROM");
    assert_eq!(from.len(), 3, "three stages: {from:?}");
    assert_eq!(from[0], "rust:1.95-alpine AS build");
    assert_eq!(from[1], "ipfs/kubo:v0.43.0 AS kubo", "the kubo image (--target kubo)");
    assert!(
        from[2].starts_with("ipfs/ipfs-cluster:v") && !from[2].contains(" AS "),
        "the cluster image is the last stage, the default target: {from:?}"
    );
    let run = instruction("RUN").join("\n");
    assert!(run.contains("cargo build --release --locked"), "{run}");
    let copies = instruction("COPY");
    assert!(
        copies
            .iter()
            .any(|c| c.contains("Cargo.toml") && c.contains("Cargo.lock")),
        "{copies:?}"
    );
    assert!(copies.iter().any(|c| c.starts_with("src ")), "{copies:?}");
    assert_eq!(
        copies
            .iter()
            .filter(|c| c.starts_with("--from=build ") && c.ends_with(&format!(" {BIN_IN_IMAGE}")))
            .count(),
        2,
        "the binary lands at {BIN_IN_IMAGE} in both images: {copies:?}"
    );
    // Stage by stage: the kubo image's, then the cluster image's (the last).
    let entries = instruction("ENTRYPOINT");
    let cmds = instruction("CMD");
    assert_eq!((entries.len(), cmds.len()), (2, 2), "{entries:?} {cmds:?}");
    assert_eq!(
        exec_form(&entries[0], "kubo ENTRYPOINT"),
        [
            "/sbin/tini",
            "--",
            BIN_IN_IMAGE,
            "slot",
            "--",
            "/usr/local/bin/start_ipfs"
        ]
    );
    assert_eq!(
        exec_form(&cmds[0], "kubo CMD"),
        ["daemon", "--migrate=true", "--agent-version-suffix=docker"],
        "kubo's own CMD"
    );
    let entry = exec_form(&entries[1], "ENTRYPOINT");
    assert_eq!(entry, ["/sbin/tini", "--", BIN_IN_IMAGE]);
    assert_eq!(exec_form(&cmds[1], "CMD"), ["daemon"]);
    // The binary drops root itself (--run-as); a USER line would keep it from
    // making the config folder the daemon's.
    assert!(instruction("USER").is_empty(), "the image must start as root");
    // The toolchain image is at least the crate's rust-version.
    let toml = text("Cargo.toml");
    let rv = toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let minor = |v: &str| v.split('.').nth(1).unwrap().parse::<u32>().unwrap();
    assert!(minor("1.95") >= minor(rv), "rust:1.95 builds rust-version {rv}");

    let ignore = text(".dockerignore");
    for p in ["target/", ".venv/", ".git/"] {
        assert!(ignore.lines().any(|l| l.trim() == p), ".dockerignore lacks {p}");
    }
}

#[test]
fn ports_agree() {
    // The cluster port follows the daemon's listen address, whose default is 9096.
    let cluster = ipfs_cluster_bootstrap::config::DEFAULT_CLUSTER_PORT;
    assert!(
        Cli::command()
            .get_arguments()
            .any(|a| a.get_id() == "cluster_port" && a.get_default_values().is_empty()),
        "--cluster-port has no default of its own"
    );
    let api = default_port("api_port");
    assert_eq!((cluster, api), (9096, 9094));

    // Dockerfile
    let exposed: BTreeSet<u16> = instruction("EXPOSE")
        .iter()
        .flat_map(|l| {
            l.split_whitespace()
                .map(|p| p.trim_end_matches("/tcp").parse::<u16>().unwrap())
        })
        .collect();
    assert!(
        exposed.contains(&cluster) && exposed.contains(&api),
        "EXPOSE {exposed:?}"
    );

    // Task definition
    let td = json_file(TASK_DEF);
    let c = container(&td, "ipfs-cluster");
    let pm = port_mappings(c);
    for p in [cluster, api] {
        assert!(
            pm.contains(&(p as u64, "tcp".into())),
            "ipfs-cluster portMappings lack {p}/tcp"
        );
    }
    let env = ecs_env(c);
    assert_eq!(tcp_port(&env["CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS"]), api);
    assert!(
        env["CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS"].starts_with("/ip4/0.0.0.0/"),
        "peers probe the API"
    );
    let kubo = port_mappings(container(&td, "ipfs"));
    assert!(kubo.contains(&(tcp_port(&env["CLUSTER_IPFSHTTP_NODEMULTIADDRESS"]) as u64, "tcp".into())));
    for p in [(4001, "tcp"), (4001, "udp"), (8080, "tcp")] {
        assert!(kubo.contains(&(p.0, p.1.into())), "ipfs portMappings lack {p:?}");
    }

    // Template: the members' security group and the load balancer path.
    let tpl = Template::load();
    let (svc_name, svc) = tpl.one("AWS::ECS::Service");
    let sgs = arr(
        &svc["Properties"]["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"],
        "service SecurityGroups",
    );
    assert_eq!(sgs.len(), 1);
    let peer_sg = s(&sgs[0]["Ref"], "service security group");
    let mut between_members = BTreeSet::new();
    for (_, r) in tpl.of_type("AWS::EC2::SecurityGroupIngress") {
        let p = &r["Properties"];
        if p["GroupId"]["Ref"] == peer_sg && p["SourceSecurityGroupId"]["Ref"] == peer_sg {
            assert_eq!(p["FromPort"], p["ToPort"]);
            between_members.insert((
                p["FromPort"].as_u64().unwrap(),
                s(&p["IpProtocol"], "proto").to_string(),
            ));
        }
    }
    for p in [(cluster as u64, "tcp"), (api as u64, "tcp"), (4001, "tcp")] {
        assert!(
            between_members.contains(&(p.0, p.1.into())),
            "members do not reach each other on {p:?}: {between_members:?}"
        );
    }
    let inline = arr(
        &tpl.resources()[peer_sg]["Properties"]["SecurityGroupIngress"],
        "peer SecurityGroupIngress",
    );
    let (_, lb) = tpl.one("AWS::ElasticLoadBalancingV2::LoadBalancer");
    let lb_sg = s(
        &arr(&lb["Properties"]["SecurityGroups"], "LB SecurityGroups")[0]["Ref"],
        "LB SG",
    );
    assert_eq!(
        inline.len(),
        1,
        "the only other way in: the gateway from the load balancer"
    );
    assert_eq!(
        (&inline[0]["FromPort"], &inline[0]["SourceSecurityGroupId"]["Ref"]),
        (&json!(8080), &json!(lb_sg))
    );
    assert!(
        inline[0]["CidrIp"].is_null(),
        "nothing open to the internet but the load balancer"
    );
    assert!(
        !between_members.iter().any(|(p, _)| *p == 5001),
        "kubo's RPC API (5001) stays inside the task"
    );
    let (_, tg) = tpl.one("AWS::ElasticLoadBalancingV2::TargetGroup");
    let tgp = &tg["Properties"];
    assert_eq!(
        (
            &tgp["Port"],
            &tgp["TargetType"],
            &tgp["HealthCheckPath"],
            &tgp["Matcher"]["HttpCode"]
        ),
        (&json!(8080), &json!("ip"), &json!("/ipfs/bafkqaaa"), &json!("200"))
    );
    let lbs = arr(&svc["Properties"]["LoadBalancers"], "service LoadBalancers");
    assert_eq!(
        (&lbs[0]["ContainerName"], &lbs[0]["ContainerPort"]),
        (&json!("ipfs"), &json!(8080)),
        "{svc_name}"
    );
    let (_, listener) = tpl.one("AWS::ElasticLoadBalancingV2::Listener");
    assert_eq!(listener["Properties"]["Port"], 80);
    let lb_in = arr(
        &tpl.resources()[lb_sg]["Properties"]["SecurityGroupIngress"],
        "LB ingress",
    );
    assert!(lb_in.iter().any(|r| r["FromPort"] == 80 && r["CidrIp"] == "0.0.0.0/0"));
    let ttd = tpl.task_definition();
    assert_eq!(port_mappings(container(&ttd, "ipfs-cluster")), pm);
    assert_eq!(port_mappings(container(&ttd, "ipfs")), kubo);

    // Compose: every peer's API listens where the probes look; only loopback is published.
    let compose = Compose::base();
    for (name, svc) in compose.clusters() {
        let env = Compose::env(svc);
        let a = env.get("BOOTSTRAP_API_PORT").map(|p| p.parse().unwrap()).unwrap_or(api);
        assert_eq!(tcp_port(&env["CLUSTER_RESTAPI_HTTPLISTENMULTIADDRESS"]), a, "{name}");
    }
    let mut published = BTreeMap::new();
    for (name, svc) in compose.services() {
        for p in svc["ports"].as_array().into_iter().flatten() {
            let p = s(p, "port");
            assert!(p.starts_with("127.0.0.1:"), "{name} publishes {p} beyond loopback");
            published.insert(p.to_string(), name.clone());
        }
    }
    assert_eq!(
        published.get(&format!("127.0.0.1:{api}:{api}")).map(String::as_str),
        Some("cluster0")
    );
    assert_eq!(published.get("127.0.0.1:8080:8080").map(String::as_str), Some("ipfs0"));
}

#[test]
fn template_grants_what_iam_policy_prints() {
    let args = [
        "--discovery",
        "cloudmap",
        "--verify-tasks",
        "--expect",
        "auto",
        "--cloudmap-service-id",
        "srv-x",
        "--cloudmap-namespace",
        "n",
        "--cloudmap-service",
        "s",
    ];
    let printed = iam_policy(&args, &BTreeMap::new()).unwrap();
    assert_eq!(printed["Version"], "2012-10-17");
    let want = statement(&printed, "PeerDiscovery");
    let tpl = Template::load();
    let doc = tpl.task_role_policy();
    let stmts = arr(&doc["Statement"], "task role statements");
    assert_eq!(stmts.len(), 1, "the task role has only the discovery statement");
    let got = statement(&doc, "PeerDiscovery");
    assert_eq!(sorted_actions(got), sorted_actions(want));
    assert_eq!((&got["Effect"], &got["Resource"]), (&want["Effect"], &want["Resource"]));
    assert!(
        !sorted_actions(got)
            .iter()
            .any(|a| a.ends_with(":ListNamespaces") || a.ends_with(":ListServices")),
        "the service ID is passed, so no lookups"
    );
}

#[test]
fn template_container_environment_is_accepted_and_needs_exactly_the_task_role() {
    let tpl = Template::load();
    let td = tpl.task_definition();
    let env = ecs_container_env(container(&td, "ipfs-cluster"));
    let printed = iam_policy(&[], &env).unwrap_or_else(|e| panic!("the template's environment: {e}"));
    let granted = tpl.task_role_policy();
    assert_eq!(
        sorted_actions(statement(&printed, "PeerDiscovery")),
        sorted_actions(statement(&granted, "PeerDiscovery")),
        "the template's own configuration needs exactly what its task role grants"
    );
    assert_eq!(env["BOOTSTRAP_EXPECT"], "auto");
    assert_eq!(env["BOOTSTRAP_VERIFY_TASKS"], "true");
    assert!(env["BOOTSTRAP_CLOUDMAP_SERVICE_ID"].starts_with("srv-"));

    // The same for the stand-alone task definition.
    let td = json_file(TASK_DEF);
    let env = ecs_container_env(container(&td, "ipfs-cluster"));
    let printed = iam_policy(&[], &env).unwrap_or_else(|e| panic!("{TASK_DEF}'s environment: {e}"));
    assert_eq!(
        sorted_actions(statement(&printed, "PeerDiscovery")),
        sorted_actions(statement(&granted, "PeerDiscovery"))
    );
}

#[test]
fn task_definition_is_register_task_definition_input() {
    let td = json_file(TASK_DEF);
    assert_eq!(td["family"], "ipfs-cluster");
    assert_eq!(td["networkMode"], "awsvpc");
    assert_eq!(td["requiresCompatibilities"], json!(["FARGATE"]));
    assert_eq!(
        (&td["cpu"], &td["memory"]),
        (&json!("1024"), &json!("2048")),
        "strings in the API"
    );
    let volumes: BTreeSet<&str> = arr(&td["volumes"], "volumes")
        .iter()
        .map(|v| s(&v["name"], "volume"))
        .collect();
    for c in arr(&td["containerDefinitions"], "containers") {
        let name = s(&c["name"], "container name");
        assert_eq!(c["essential"], true, "{name}");
        for m in c["mountPoints"].as_array().into_iter().flatten() {
            assert!(volumes.contains(s(&m["sourceVolume"], "sourceVolume")), "{name}: {m}");
        }
        let log = &c["logConfiguration"];
        assert_eq!(log["logDriver"], "awslogs", "{name}");
        for o in ["awslogs-group", "awslogs-region", "awslogs-stream-prefix"] {
            assert!(log["options"][o].is_string(), "{name}: awslogs needs {o}");
        }
        let hc = &c["healthCheck"];
        let within = |k: &str, lo: u64, hi: u64| (lo..=hi).contains(&hc[k].as_u64().unwrap());
        assert!(
            within("interval", 5, 300) && within("timeout", 2, 60) && within("retries", 1, 10),
            "{name}: {hc}"
        );
        assert!(within("startPeriod", 0, 300), "{name}: {hc}");
        assert!(
            (2..=120).contains(&c["stopTimeout"].as_u64().unwrap()),
            "{name}: Fargate stopTimeout"
        );
    }
    for (name, repo) in [
        ("ipfs", "/ipfs-cluster-bootstrap-kubo:"),
        ("ipfs-cluster", "/ipfs-cluster-bootstrap:"),
    ] {
        let image = s(&container(&td, name)["image"], "image");
        assert!(image.contains(repo), "{name} runs our image ({repo}): {image}");
        assert!(!image.ends_with(":latest"), "{name}: a pinned tag, not {image}");
    }
    let c = container(&td, "ipfs-cluster");
    assert_eq!(
        c["dependsOn"],
        json!([{"containerName": "ipfs", "condition": "HEALTHY"}])
    );
    // Scale-in retirement (--scale-in-timeout, 90 s) runs before the daemon stops.
    assert_eq!(c["stopTimeout"], 120);
    let secrets: BTreeMap<&str, &str> = arr(&c["secrets"], "secrets")
        .iter()
        .map(|x| (s(&x["name"], "name"), s(&x["valueFrom"], "valueFrom")))
        .collect();
    assert_eq!(
        secrets.keys().copied().collect::<Vec<_>>(),
        ["CLUSTER_RESTAPI_BASICAUTHCREDENTIALS", "CLUSTER_SECRET"]
    );
    assert!(
        secrets.values().all(|v| v.starts_with("arn:aws:secretsmanager:")),
        "{secrets:?}"
    );
    let env = ecs_env(c);
    assert!(
        !env.contains_key("CLUSTER_SECRET"),
        "the secret comes from Secrets Manager, not in plain text"
    );
    for (k, v) in [
        ("BOOTSTRAP_EXPECT", "auto"),
        ("BOOTSTRAP_VERIFY_TASKS", "true"),
        ("BOOTSTRAP_LOG_FORMAT", "json"),
        ("CLUSTER_IPFSHTTP_NODEMULTIADDRESS", "/ip4/127.0.0.1/tcp/5001"),
        ("CLUSTER_CRDT_TRUSTEDPEERS", "*"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    for k in [
        "BOOTSTRAP_CLOUDMAP_NAMESPACE",
        "BOOTSTRAP_CLOUDMAP_SERVICE",
        "BOOTSTRAP_CLOUDMAP_SERVICE_ID",
    ] {
        assert!(env.contains_key(k), "{k}");
    }
    botocore_validates(&td, TASK_DEF);
}

#[test]
fn template_task_definition_has_the_shape_of_the_stand_alone_one() {
    let tpl = Template::load();
    let mut got = tpl.task_definition();
    let mut want = json_file(TASK_DEF);
    botocore_validates(&got, "the template's task definition");
    // Values that differ by design: names, roles, size, the images, the EFS
    // file system and access point and the Cloud Map IDs (references in the
    // template), the log options (the stand-alone one creates its log group).
    for td in [&mut got, &mut want] {
        let o = td.as_object_mut().unwrap();
        for k in ["family", "executionRoleArn", "taskRoleArn", "ephemeralStorage"] {
            o.insert(k.into(), json!("*"));
        }
        for v in o["volumes"].as_array_mut().unwrap() {
            if let Some(efs) = v.get_mut("efsVolumeConfiguration") {
                efs["fileSystemId"] = json!("*");
                efs["authorizationConfig"]["accessPointId"] = json!("*");
            }
        }
        for c in o["containerDefinitions"].as_array_mut().unwrap() {
            c["image"] = json!("*");
            c["logConfiguration"]["options"] = json!("*");
            if let Some(env) = c.get_mut("environment").and_then(Value::as_array_mut) {
                env.retain(|e| e["name"] != "AWS_REGION");
                for e in env {
                    if s(&e["name"], "name").starts_with("BOOTSTRAP_CLOUDMAP_") {
                        e["value"] = json!("*");
                    }
                }
            }
            for sec in c["secrets"].as_array_mut().into_iter().flatten() {
                sec["valueFrom"] = json!("*");
            }
        }
    }
    assert_eq!(got, want, "template (left) and {TASK_DEF} (right) differ");
}

#[test]
fn template_wires_cloud_map_roles_and_outputs() {
    let tpl = Template::load();
    // Every reference names a parameter, a pseudo parameter or a resource.
    fn walk(t: &Template, v: &Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("Ref") {
                    let _ = t.r#ref(r);
                }
                if let Some(g) = m.get("Fn::GetAtt") {
                    assert!(t.resources().contains_key(s(&g[0], "GetAtt")), "GetAtt {g}");
                }
                m.values().for_each(|x| walk(t, x));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(t, x)),
            _ => {}
        }
    }
    walk(&tpl, &tpl.t["Resources"]);
    walk(&tpl, &tpl.t["Outputs"]);
    let _ = tpl.resolve(&tpl.t["Resources"]);

    for (p, default) in [
        ("VpcId", None),
        ("SubnetIds", None),
        ("Image", None),
        ("ClusterSecretArn", None),
        ("ApiCredentialsSecretArn", None),
        ("DesiredCount", Some(json!(3))),
        ("Consensus", Some(json!("crdt"))),
    ] {
        let param = &tpl.t["Parameters"][p];
        assert!(param.is_object(), "parameter {p}");
        if let Some(d) = default {
            assert_eq!(param["Default"], d, "{p}");
        }
    }
    assert_eq!(tpl.t["Parameters"]["SubnetIds"]["Type"], "List<AWS::EC2::Subnet::Id>");

    // Cloud Map: an HTTP namespace and a service of its own, no DNS.
    let (ns_name, ns) = tpl.one("AWS::ServiceDiscovery::HttpNamespace");
    let (srv_name, srv) = tpl.one("AWS::ServiceDiscovery::Service");
    assert!(
        srv["Properties"]["DnsConfig"].is_null(),
        "no DnsConfig in an HTTP namespace"
    );
    assert_eq!(srv["Properties"]["NamespaceId"], json!({"Ref": ns_name}));
    let (_, td) = tpl.one("AWS::ECS::TaskDefinition");
    let c = arr(&td["Properties"]["ContainerDefinitions"], "containers")
        .iter()
        .find(|c| c["Name"] == "ipfs-cluster")
        .unwrap();
    let env: BTreeMap<&str, &Value> = arr(&c["Environment"], "Environment")
        .iter()
        .map(|e| (s(&e["Name"], "Name"), &e["Value"]))
        .collect();
    assert_eq!(
        *env["BOOTSTRAP_CLOUDMAP_SERVICE_ID"],
        json!({"Fn::GetAtt": [srv_name, "Id"]})
    );
    assert_eq!(
        tpl.resolve(env["BOOTSTRAP_CLOUDMAP_NAMESPACE"]),
        tpl.resolve(&ns["Properties"]["Name"])
    );
    assert_eq!(
        tpl.resolve(env["BOOTSTRAP_CLOUDMAP_SERVICE"]),
        tpl.resolve(&srv["Properties"]["Name"])
    );
    assert_eq!(*env["IPFS_CLUSTER_CONSENSUS"], json!({"Ref": "Consensus"}));

    // The ECS service: Fargate, awsvpc, the desired count; no serviceRegistries
    // (the sidecar registers itself, with its peer ID).
    let (_, svc) = tpl.one("AWS::ECS::Service");
    let sp = &svc["Properties"];
    assert_eq!(sp["LaunchType"], "FARGATE");
    assert_eq!(sp["DesiredCount"], json!({"Ref": "DesiredCount"}));
    assert!(sp["ServiceRegistries"].is_null());
    assert!(sp["NetworkConfiguration"]["AwsvpcConfiguration"].is_object());
    assert!(
        arr(&svc["DependsOn"], "service DependsOn")
            .iter()
            .any(|d| tpl.resources()[s(d, "DependsOn")]["Type"] == "AWS::ElasticLoadBalancingV2::Listener"),
        "the service waits for the listener (its target group must be attached to the load balancer)"
    );
    let lb = tpl.one("AWS::ElasticLoadBalancingV2::LoadBalancer").1;
    assert_eq!(lb["Properties"]["Scheme"], "internet-facing");

    // Execution role: pulls, logs, and exactly the two secrets the containers use.
    let exec_role = s(
        &td["Properties"]["ExecutionRoleArn"]["Fn::GetAtt"][0],
        "ExecutionRoleArn",
    );
    let er = &tpl.resources()[exec_role]["Properties"];
    assert!(
        arr(&er["ManagedPolicyArns"], "ManagedPolicyArns")
            .iter()
            .any(|m| m.to_string().contains("service-role/AmazonECSTaskExecutionRolePolicy")),
        "{er}"
    );
    let secret_refs: BTreeSet<String> = arr(&c["Secrets"], "Secrets")
        .iter()
        .map(|x| x["ValueFrom"].to_string())
        .collect();
    let stmts: Vec<&Value> = arr(&er["Policies"], "Policies")
        .iter()
        .flat_map(|p| arr(&p["PolicyDocument"]["Statement"], "Statement"))
        .collect();
    assert_eq!(stmts.len(), 1, "{stmts:?}");
    assert_eq!(sorted_actions(stmts[0]), ["secretsmanager:GetSecretValue"]);
    let granted: BTreeSet<String> = arr(&stmts[0]["Resource"], "Resource")
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(granted, secret_refs, "GetSecretValue on exactly the two secrets");
    for role in [
        exec_role,
        s(&td["Properties"]["TaskRoleArn"]["Fn::GetAtt"][0], "TaskRoleArn"),
    ] {
        let trust = &tpl.resources()[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
        assert_eq!(trust["Principal"]["Service"], "ecs-tasks.amazonaws.com", "{role}");
    }

    // Outputs: the load balancer's DNS name and the Cloud Map IDs.
    let outputs: Vec<String> = obj(&tpl.t["Outputs"], "Outputs")
        .values()
        .map(|o| o["Value"].to_string())
        .collect();
    let lb_name = tpl.one("AWS::ElasticLoadBalancingV2::LoadBalancer").0;
    for want in [
        json!({"Fn::GetAtt": [lb_name, "DNSName"]}),
        json!({"Fn::GetAtt": [ns_name, "Id"]}),
        json!({"Fn::GetAtt": [srv_name, "Id"]}),
    ] {
        assert!(outputs.contains(&want.to_string()), "no output {want}");
    }
}

/// Ignored unless asked for (`cargo test -- --ignored docker_image`): it
/// needs a Docker engine, which this project's machines lack, and a test
/// that returns early would be counted as passed. The image's command lines
/// run in the real test bed (tests/real/test_shipped.py) instead.
#[test]
#[ignore = "needs a Docker engine: cargo test -- --ignored docker_image_builds_and_runs"]
fn docker_image_builds_and_runs() {
    let info = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match &info {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "no Docker engine (docker info failed): {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("no Docker engine (docker info failed): {e}"),
    }
    let tag = format!("ipfs-cluster-bootstrap:it-{}", std::process::id());
    let run = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "docker {args:?}: {text}");
        text
    };
    let r = root();
    run(&[
        "build",
        "-f",
        r.join(DOCKERFILE).to_str().unwrap(),
        "-t",
        &tag,
        r.to_str().unwrap(),
    ]);
    let help = run(&["run", "--rm", &tag, "--help"]);
    assert!(help.contains("ipfs-cluster-bootstrap"), "{help}");
    run(&["run", "--rm", "--entrypoint", "ipfs-cluster-service", &tag, "--version"]);
    let _ = Command::new("docker").args(["rmi", &tag]).output();
}
