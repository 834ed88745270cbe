//! moto's server on 127.0.0.1 and a port of its own, with a Cloud Map HTTP
//! namespace and service created through the real SDK.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_servicediscovery as sd;

use super::root;

pub struct Moto {
    child: Child,
    pub port: u16,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Moto {
    pub fn start() -> Moto {
        let port = free_port();
        let child = Command::new(root().join(".venv/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let t = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The SDK client tests seed with: explicit region, static credentials and
    /// the loopback endpoint, so nothing falls through to IMDS or real AWS.
    pub async fn client(&self) -> sd::Client {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .http_client(ipfs_cluster_bootstrap::aws_http::client())
            .credentials_provider(sd::config::Credentials::new("testing", "testing", None, None, "static"))
            .endpoint_url(self.endpoint())
            .load()
            .await;
        sd::Client::new(&conf)
    }

    /// Creates an HTTP namespace and a service in it; returns the service ID.
    pub async fn cloudmap(&self, namespace: &str, service: &str) -> String {
        let c = self.client().await;
        c.create_http_namespace()
            .name(namespace)
            .send()
            .await
            .expect("create namespace");
        let ns = c.list_namespaces().send().await.unwrap();
        let ns_id = ns
            .namespaces()
            .iter()
            .find(|n| n.name() == Some(namespace))
            .and_then(|n| n.id())
            .unwrap()
            .to_owned();
        let s = c
            .create_service()
            .name(service)
            .namespace_id(ns_id)
            .send()
            .await
            .expect("create service");
        s.service().and_then(|s| s.id()).unwrap().to_owned()
    }

    /// Registers an instance directly (a stale record, a foreign one).
    pub async fn register(&self, service_id: &str, instance_id: &str, attrs: &[(&str, &str)]) {
        for (k, v) in attrs {
            if *k == "AWS_INSTANCE_IPV4" {
                super::loopback(v.parse().unwrap());
            }
        }
        let c = self.client().await;
        let mut req = c.register_instance().service_id(service_id).instance_id(instance_id);
        for (k, v) in attrs {
            req = req.attributes(*k, *v);
        }
        req.send().await.expect("register instance");
    }

    pub async fn instance_ids(&self, service_id: &str) -> Vec<String> {
        let c = self.client().await;
        let out = c.list_instances().service_id(service_id).send().await.unwrap();
        out.instances()
            .iter()
            .filter_map(|i| i.id().map(str::to_owned))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    async fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .http_client(ipfs_cluster_bootstrap::aws_http::client())
            .credentials_provider(sd::config::Credentials::new("testing", "testing", None, None, "static"))
            .endpoint_url(self.endpoint())
            .load()
            .await
    }

    pub async fn ec2(&self) -> aws_sdk_ec2::Client {
        aws_sdk_ec2::Client::new(&self.sdk().await)
    }

    pub async fn ecs(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.sdk().await)
    }

    /// Starts an instance at a loopback address with these tags; its ID.
    pub async fn instance(&self, ip: std::net::IpAddr, tags: &[(&str, &str)]) -> String {
        use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};
        let ip = super::loopback(ip);
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Instance)
            .set_tags(Some(
                tags.iter()
                    .map(|(k, v)| Tag::builder().key(*k).value(*v).build())
                    .collect(),
            ))
            .build();
        let out = self
            .ec2()
            .await
            .run_instances()
            .image_id("ami-12345678")
            .min_count(1)
            .max_count(1)
            .private_ip_address(ip.to_string())
            .tag_specifications(spec)
            .send()
            .await
            .expect("run_instances");
        out.instances()[0].instance_id().unwrap().to_owned()
    }

    /// moto advances an ECS task's status at every DescribeTasks; keep tasks
    /// RUNNING until stopped, as ECS does.
    /// An ECS cluster `cluster` with a service `service` of `desired` tasks of
    /// family `family`, and `run` tasks of it started; their task ARNs.
    pub async fn ecs_service(&self, cluster: &str, family: &str, service: &str, desired: i32, run: i32) -> Vec<String> {
        let ecs = self.ecs().await;
        ecs.create_cluster().cluster_name(cluster).send().await.unwrap();
        let container = aws_sdk_ecs::types::ContainerDefinition::builder()
            .name(family)
            .image("i")
            .memory(128)
            .build();
        ecs.register_task_definition()
            .family(family)
            .network_mode(aws_sdk_ecs::types::NetworkMode::Bridge)
            .container_definitions(container)
            .send()
            .await
            .unwrap();
        ecs.create_service()
            .cluster(cluster)
            .service_name(service)
            .task_definition(family)
            .desired_count(desired)
            .send()
            .await
            .unwrap();
        let out = ecs
            .run_task()
            .cluster(cluster)
            .task_definition(family)
            .count(run)
            .launch_type(aws_sdk_ecs::types::LaunchType::Fargate)
            .send()
            .await
            .unwrap();
        out.tasks().iter().map(|t| t.task_arn().unwrap().to_owned()).collect()
    }

    pub fn hold_ecs_tasks(&self) {
        let body = r#"{"model_name":"ecs::task","transition":{"progression":"manual","times":1000000}}"#;
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "POST /moto-api/state-manager/set-transition HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(
            out.starts_with("HTTP/1.1 20") || out.starts_with("HTTP/1.0 20"),
            "{out}"
        );
    }
}
