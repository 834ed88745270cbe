//! AWS Cloud Map: this peer registers an instance in a service of its own, and
//! lists the peers with DiscoverInstances (the data plane: ~1000 requests/s per
//! account, not ListInstances' ~50).

use super::sdk_error;
use std::time::Duration;

use aws_sdk_servicediscovery::config::interceptors::BeforeSerializationInterceptorContextMut;
use aws_sdk_servicediscovery::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_servicediscovery::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_servicediscovery::types::{
    FilterCondition, HealthStatusFilter, OperationStatus, ServiceFilter, ServiceFilterName,
};
use aws_sdk_servicediscovery::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::endpoint::EndpointPrefix;
use tokio::sync::OnceCell;

use super::{attributes, Discovered, DiscoveryError, ErrorKind, Registry};
use crate::peer::PeerId;
use crate::view::Registration;

/// Cloud Map returns at most this many instances per DiscoverInstances call.
pub const MAX_RESULTS: i32 = 1000;

pub struct CloudMap {
    client: Client,
    namespace: String,
    service: String,
    service_id: OnceCell<String>,
    default_api_port: u16,
    /// The registration's operation, polled in the background from
    /// `start_register` until `registered` takes its outcome.
    pending: std::sync::Mutex<Option<tokio::task::JoinHandle<Result<(), DiscoveryError>>>>,
}

/// The SDK always prefixes the DiscoverInstances host with `data-`, even for a
/// custom endpoint (moto, LocalStack), which then does not resolve. Installed
/// only when an endpoint override is configured.
#[derive(Debug)]
struct DisableHostPrefix;

impl Intercept for DisableHostPrefix {
    fn name(&self) -> &'static str {
        "DisableHostPrefix"
    }
    fn modify_before_serialization(
        &self,
        _: &mut BeforeSerializationInterceptorContextMut<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state().unset::<EndpointPrefix>();
        Ok(())
    }
}

fn error<E, R>(action: &'static str, e: SdkError<E, R>) -> DiscoveryError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    sdk_error("cloudmap", action, e)
}

fn other(action: &'static str, kind: ErrorKind, detail: impl Into<String>) -> DiscoveryError {
    DiscoveryError {
        backend: "cloudmap",
        action,
        kind,
        detail: detail.into(),
    }
}

impl CloudMap {
    pub fn new(
        sdk: &aws_config::SdkConfig,
        custom_endpoint: bool,
        namespace: String,
        service: String,
        service_id: Option<String>,
        default_api_port: u16,
    ) -> CloudMap {
        let mut conf = aws_sdk_servicediscovery::config::Builder::from(sdk);
        if custom_endpoint {
            conf = conf.interceptor(DisableHostPrefix);
        }
        let cell = OnceCell::new();
        if let Some(id) = service_id {
            let _ = cell.set(id);
        }
        CloudMap {
            client: Client::from_conf(conf.build()),
            namespace,
            service,
            service_id: cell,
            default_api_port,
            pending: std::sync::Mutex::new(None),
        }
    }

    /// The service ID that RegisterInstance needs: given, or looked up once by name.
    async fn service_id(&self) -> Result<&str, DiscoveryError> {
        self.service_id
            .get_or_try_init(|| self.lookup_service_id())
            .await
            .map(String::as_str)
    }

    async fn lookup_service_id(&self) -> Result<String, DiscoveryError> {
        let mut namespace_id = None;
        let mut pages = self.client.list_namespaces().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("servicediscovery:ListNamespaces", e))?;
            for ns in page.namespaces() {
                let http_name = ns
                    .properties()
                    .and_then(|p| p.http_properties())
                    .and_then(|h| h.http_name());
                if http_name == Some(self.namespace.as_str()) || ns.name() == Some(self.namespace.as_str()) {
                    namespace_id = ns.id().map(str::to_owned);
                }
            }
        }
        let Some(namespace_id) = namespace_id else {
            return Err(other(
                "servicediscovery:ListNamespaces",
                ErrorKind::NotFound,
                format!("no namespace named {:?} (--cloudmap-namespace)", self.namespace),
            ));
        };
        let filter = ServiceFilter::builder()
            .name(ServiceFilterName::NamespaceId)
            .values(&namespace_id)
            .condition(FilterCondition::Eq)
            .build()
            .map_err(|e| other("servicediscovery:ListServices", ErrorKind::Other, e.to_string()))?;
        let mut pages = self.client.list_services().filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| error("servicediscovery:ListServices", e))?;
            for s in page.services() {
                if s.name() == Some(self.service.as_str()) {
                    if let Some(id) = s.id() {
                        return Ok(id.to_owned());
                    }
                }
            }
        }
        Err(other(
            "servicediscovery:ListServices",
            ErrorKind::NotFound,
            format!(
                "no service named {:?} in namespace {:?} (--cloudmap-service)",
                self.service, self.namespace
            ),
        ))
    }
}

/// Polls an asynchronous Cloud Map operation until it ends.
async fn wait_operation(client: &Client, operation_id: &str) -> Result<(), DiscoveryError> {
    const ACTION: &str = "servicediscovery:GetOperation";
    let mut delay = Duration::from_millis(50);
    for _ in 0..40 {
        let out = client
            .get_operation()
            .operation_id(operation_id)
            .send()
            .await
            .map_err(|e| error(ACTION, e))?;
        let op = out.operation();
        match op.and_then(|o| o.status()) {
            Some(OperationStatus::Success) => return Ok(()),
            Some(OperationStatus::Fail) => {
                let o = op.expect("status came from it");
                let code = o.error_code().unwrap_or_default();
                let kind = if code == "ACCESS_DENIED" {
                    ErrorKind::AccessDenied
                } else {
                    ErrorKind::Other
                };
                return Err(other(
                    "servicediscovery:RegisterInstance",
                    kind,
                    format!(
                        "operation {operation_id} failed: {code} {}",
                        o.error_message().unwrap_or_default()
                    ),
                ));
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
    Err(other(
        ACTION,
        ErrorKind::Unreachable,
        format!("operation {operation_id} did not finish in time"),
    ))
}

impl Registry for CloudMap {
    fn name(&self) -> &'static str {
        "cloudmap"
    }

    async fn rank(&self, _me: &PeerId, _ip: std::net::IpAddr, now_ms: u64) -> Result<u64, DiscoveryError> {
        Ok(now_ms)
    }

    async fn start_register(&self, me: &Registration) -> Result<(), DiscoveryError> {
        const ACTION: &str = "servicediscovery:RegisterInstance";
        // An earlier registration still in flight: this one replaces it.
        let _ = self.registered().await;
        let service_id = self.service_id().await?;
        let mut req = self
            .client
            .register_instance()
            .service_id(service_id)
            .instance_id(&me.instance_id);
        for (k, v) in attributes::encode(me) {
            if v.len() > attributes::MAX_VALUE {
                return Err(other(
                    ACTION,
                    ErrorKind::Other,
                    format!("attribute {k} is longer than Cloud Map's 1024 characters"),
                ));
            }
            req = req.attributes(k, v);
        }
        let out = req.send().await.map_err(|e| error(ACTION, e))?;
        if let Some(op) = out.operation_id() {
            let (client, op) = (self.client.clone(), op.to_owned());
            let wait = tokio::spawn(async move { wait_operation(&client, &op).await });
            *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(wait);
        }
        Ok(())
    }

    async fn registered(&self) -> Result<(), DiscoveryError> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        match pending {
            None => Ok(()),
            Some(wait) => wait.await.unwrap_or_else(|e| {
                Err(other(
                    "servicediscovery:GetOperation",
                    ErrorKind::Other,
                    format!("waiting for the registration: {e}"),
                ))
            }),
        }
    }

    async fn deregister(&self, me: &Registration) -> Result<(), DiscoveryError> {
        const ACTION: &str = "servicediscovery:DeregisterInstance";
        // Let a registration still in flight end first, whatever its outcome.
        let _ = self.registered().await;
        let service_id = self.service_id().await?;
        let out = self
            .client
            .deregister_instance()
            .service_id(service_id)
            .instance_id(&me.instance_id)
            .send()
            .await
            .map_err(|e| error(ACTION, e))?;
        match out.operation_id() {
            Some(op) => wait_operation(&self.client, op).await,
            None => Ok(()),
        }
    }

    async fn remove_stale(&self, instance_id: &str) -> Result<(), DiscoveryError> {
        let service_id = self.service_id().await?;
        self.client
            .deregister_instance()
            .service_id(service_id)
            .instance_id(instance_id)
            .send()
            .await
            .map_err(|e| error("servicediscovery:DeregisterInstance", e))?;
        Ok(())
    }

    async fn discover(&self) -> Result<Discovered, DiscoveryError> {
        let out = self
            .client
            .discover_instances()
            .namespace_name(&self.namespace)
            .service_name(&self.service)
            .max_results(MAX_RESULTS)
            // Our own probes judge liveness; Cloud Map health is not maintained for this service.
            .health_status(HealthStatusFilter::All)
            .send()
            .await
            .map_err(|e| error("servicediscovery:DiscoverInstances", e))?;
        let mut found = Discovered::default();
        for inst in out.instances() {
            let id = inst.instance_id().unwrap_or_default();
            let empty = Default::default();
            match attributes::decode(id, inst.attributes().unwrap_or(&empty), self.default_api_port) {
                Ok(r) => found.registrations.push(r.into()),
                Err(why) => found.skipped.push(format!("instance {id:?}: {why}")),
            }
        }
        Ok(found)
    }
}
