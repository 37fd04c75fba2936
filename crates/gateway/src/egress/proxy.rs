//! The proxy server: identity, resolve-check-connect, forwarding, tunnels, accounting.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use berth_contract::credential::digest;
use berth_contract::{DirectorySnapshot, PluginEntry};
use berth_store::AuditEvent;
use berth_store::audit::types;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::rules::{
    Decision, DenyCategory, EgressPolicy, Refusal, Target, TargetHost, own_address, plugin_network,
};
use super::{EgressSettings, Resolver, SystemResolver, splice};
use crate::{Error, Gateway};

const CREDENTIAL_HINT: &str = "use the proxy URL http://PLUGIN:TOKEN@HOST:PORT with the plugin's \
     name and its BERTH_PLUGIN_TOKEN";

/// Buffer per direction of a tunnel that is not spliced (a connection hyper did not hand
/// over as a plain TCP stream). Tokio's default (8 KiB) costs a read and a write system
/// call per 8 KiB on each side: a 100 MB download through a tunnel ran at 21 % of direct,
/// 30–44 % with 64 KiB, 62–66 % with 256 KiB (`cargo bench -p berth-gateway --bench
/// egress`, docs/benchmarks.md).
const TUNNEL_BUFFER: usize = 256 * 1024;

/// The egress proxy of a [`Gateway`]: cheap to clone; [`EgressProxy::serve`] runs it.
#[derive(Clone)]
pub struct EgressProxy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EgressProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressProxy")
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

struct Inner {
    gateway: Gateway,
    settings: EgressSettings,
    resolver: Arc<dyn Resolver>,
    /// Open tunnels per plugin, for `--egress-max-tunnels`.
    tunnels: Mutex<HashMap<String, usize>>,
    /// Set when the proxy stops: every tunnel closes.
    closing: watch::Sender<bool>,
}

impl EgressProxy {
    /// A proxy for `gateway`'s plugins, resolving through the system resolver.
    pub fn new(gateway: Gateway, settings: EgressSettings) -> Self {
        Self::with_resolver(gateway, settings, Arc::new(SystemResolver))
    }

    /// A proxy resolving names through `resolver`.
    pub fn with_resolver(
        gateway: Gateway,
        settings: EgressSettings,
        resolver: Arc<dyn Resolver>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                gateway,
                settings,
                resolver,
                tunnels: Mutex::new(HashMap::new()),
                closing: watch::Sender::new(false),
            }),
        }
    }

    /// The number of tunnels `plugin` has open now.
    pub fn open_tunnels(&self, plugin: &str) -> usize {
        self.inner
            .tunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(plugin)
            .copied()
            .unwrap_or(0)
    }

    /// Serves on `listener` until `shutdown` resolves (or this future is dropped); then
    /// stops accepting and closes every connection and tunnel.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let _close = CloseTunnelsOnDrop(self.inner.clone());
        let mut connections = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        connections.spawn(self.clone().serve_connection(stream, peer));
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: back off instead of spinning.
                        tracing::warn!(error = %e, "egress proxy: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        connections.shutdown().await;
        Ok(())
    }

    async fn serve_connection(self, stream: TcpStream, peer: SocketAddr) {
        let settings = &self.inner.settings;
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.idle_timeout.min(Duration::from_secs(30)))
            .max_buf_size(settings.max_header_bytes.max(8192));
        let this = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let this = this.clone();
            async move { Ok::<_, Infallible>(this.handle(req, peer).await) }
        });
        if let Err(e) = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await
        {
            tracing::debug!(error = %e, %peer, "egress proxy: connection ended with an error");
        }
    }

    async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response {
        let limit = self.inner.settings.max_header_bytes;
        let head = req.uri().to_string().len()
            + req
                .headers()
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        // hyper bounds its read buffer, not a head that arrived whole in one read.
        if head > limit {
            return Error::HeadersTooLarge { limit }.into_response();
        }
        let gateway = &self.inner.gateway;
        // Subscribed before the snapshot is read, so a tunnel sees every later change.
        let changes = gateway.directory().subscribe();
        let snapshot = gateway.snapshot();
        let entry = match self.identify(req.headers(), &snapshot, peer) {
            Ok(entry) => entry,
            Err(e) => return e.into_response(),
        };
        let result = if req.method() == Method::CONNECT {
            self.connect(req, entry, changes).await
        } else {
            self.forward(req, entry).await
        };
        result.unwrap_or_else(IntoResponse::into_response)
    }

    /// The plugin whose credential the request carries, or a 407.
    fn identify(
        &self,
        headers: &HeaderMap,
        snapshot: &DirectorySnapshot,
        peer: SocketAddr,
    ) -> Result<Arc<PluginEntry>, Error> {
        let refuse = |reason: String, plugin: Option<&str>| {
            let gateway = &self.inner.gateway;
            let metrics = gateway.metrics();
            metrics
                .egress_requests
                .with_label_values(&[plugin.unwrap_or(""), "denied:unauthenticated", "denied"])
                .inc();
            metrics.record_denial(plugin.unwrap_or(""), "egress_authentication");
            let mut event = AuditEvent::new(
                plugin.map_or_else(|| "anonymous".to_owned(), actor),
                types::SECURITY,
                "denied",
            )
            .details(json!({
                "permission": "egress",
                "code": "proxy_authentication_required",
                "reason": reason,
                "peer": peer.ip().to_string(),
            }));
            if let Some(plugin) = plugin {
                event = event.plugin(plugin);
            }
            gateway.auditor().record(event);
            Error::ProxyAuthenticationRequired(format!("{reason}; {CREDENTIAL_HINT}"))
        };
        let Some(value) = headers.get(header::PROXY_AUTHORIZATION) else {
            return Err(refuse("no Proxy-Authorization header".into(), None));
        };
        let Some((user, token)) = basic_credentials(value) else {
            return Err(refuse(
                "Proxy-Authorization is not Basic base64(PLUGIN:TOKEN)".into(),
                None,
            ));
        };
        let Some(name) = snapshot.plugin_for_token(&digest(&token)) else {
            return Err(refuse("unknown egress credential".into(), None));
        };
        if user != name {
            return Err(refuse(
                format!("the proxy user {user:?} is not the plugin this credential belongs to"),
                Some(name),
            ));
        }
        let entry = snapshot
            .get(name)
            .cloned()
            .ok_or_else(|| refuse("unknown egress credential".into(), None))?;
        if self.inner.settings.check_source && !from_instance(&entry, peer.ip()) {
            return Err(refuse(
                format!(
                    "the credential of plugin {name} was used from {}, which is not one of its \
                     instances (--egress-check-source)",
                    peer.ip()
                ),
                Some(name),
            ));
        }
        Ok(entry)
    }

    async fn connect(
        &self,
        mut req: Request<Incoming>,
        entry: Arc<PluginEntry>,
        changes: watch::Receiver<Arc<DirectorySnapshot>>,
    ) -> Result<Response, Error> {
        let uri = req.uri();
        let authority = match (uri.scheme(), uri.authority(), uri.path()) {
            (None, Some(authority), "" | "/") => authority.as_str().to_owned(),
            _ => {
                return Err(bad_request(format!(
                    "CONNECT needs host:port as its target (e.g. CONNECT api.example.com:443), not {uri}"
                )));
            }
        };
        let target = Target::parse_authority(&authority, None)
            .map_err(|e| bad_request(format!("CONNECT target: {e}")))?;
        let slot = self.tunnel_slot(entry.name())?;
        let upstream = self.open(&entry, &target).await?;
        let on_upgrade = hyper::upgrade::on(&mut req);
        let this = self.clone();
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    this.tunnel(upgraded, upstream, entry, target, changes)
                        .await
                }
                Err(e) => tracing::debug!(error = %e, "egress proxy: CONNECT upgrade failed"),
            }
            drop(slot);
        });
        Ok(StatusCode::OK.into_response())
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        entry: Arc<PluginEntry>,
    ) -> Result<Response, Error> {
        let uri = req.uri().clone();
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad_request(
                    "https:// goes through a CONNECT tunnel (set HTTPS_PROXY); the proxy does not open TLS"
                        .into(),
                ));
            }
            Some(other) => {
                return Err(bad_request(format!(
                    "{other}:// is not proxied; only http:// in absolute form, and CONNECT for anything else"
                )));
            }
            None => {
                return Err(bad_request(
                    "this is an egress proxy: send absolute-form requests (GET http://host/path) or CONNECT host:port"
                        .into(),
                ));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| bad_request("the absolute URI has no host".into()))?
            .clone();
        let target = Target::parse_authority(authority.as_str(), Some(80))
            .map_err(|e| bad_request(format!("request URI: {e}")))?;
        let upstream = self.open(&entry, &target).await?;
        let (mut parts, body) = req.into_parts();
        parts.uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|_| bad_request("the request path is not valid".into()))?;
        strip_hop_by_hop(&mut parts.headers);
        let host = HeaderValue::from_str(authority.as_str()).map_err(|_| {
            bad_request("the request URI's host is not a valid header value".into())
        })?;
        // Absolute form wins over any Host header the client sent (RFC 9112 §3.2.2).
        parts.headers.insert(header::HOST, host);
        parts.version = http::Version::HTTP_11;
        let idle = self.inner.settings.idle_timeout;
        let activity = upstream.stream.activity.clone();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(upstream.stream))
                .await
                .map_err(|e| Error::EgressUnreachable(format!("{target}: {e}")))?;
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = idle_for(&activity, idle) => {}
            }
        });
        let response =
            tokio::time::timeout(idle, sender.send_request(Request::from_parts(parts, body)))
                .await
                .map_err(|_| {
                    Error::EgressTimeout(format!(
                        "{target} did not answer within {}s (--egress-idle-timeout)",
                        idle.as_secs()
                    ))
                })?
                .map_err(|e| Error::EgressUnreachable(format!("{target} failed: {e}")))?;
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// Resolve, check every address, connect to a checked one.
    async fn open(&self, entry: &PluginEntry, target: &Target) -> Result<Upstream, Error> {
        let plugin = entry.name();
        let settings = &self.inner.settings;
        let policy = &settings.policy;
        let started = Instant::now();
        let addresses = match &target.host {
            TargetHost::Ip(ip) => vec![*ip],
            TargetHost::Name(name) => {
                if let Some(refusal) = policy.precheck(&entry.granted_egress, target) {
                    return Err(self.refuse(plugin, target, refusal));
                }
                let resolved = tokio::time::timeout(
                    settings.connect_timeout,
                    self.inner.resolver.resolve(name, target.port),
                )
                .await;
                match resolved {
                    Ok(Ok(addresses)) if !addresses.is_empty() => addresses,
                    Ok(Ok(_)) => {
                        return Err(self.failed(
                            plugin,
                            "unresolved",
                            Error::EgressUnreachable(format!("{name} has no address")),
                        ));
                    }
                    Ok(Err(e)) => {
                        return Err(self.failed(
                            plugin,
                            "unresolved",
                            Error::EgressUnreachable(format!("cannot resolve {name}: {e}")),
                        ));
                    }
                    Err(_) => {
                        return Err(self.failed(
                            plugin,
                            "unresolved",
                            Error::EgressTimeout(format!(
                                "resolving {name} took longer than {}ms (--egress-connect-timeout)",
                                settings.connect_timeout.as_millis()
                            )),
                        ));
                    }
                }
            }
        };
        // Every answer is checked, not only the one used: a name that mixes public and
        // internal addresses is how rebinding attacks look.
        let mut rule = None;
        let mut granted = None;
        let gateway_networks = settings.interfaces.as_ref().map(|i| i.current());
        let plugin_addresses = match gateway_networks {
            Some(_) => plugin_addresses(&self.inner.gateway.snapshot()),
            None => Vec::new(),
        };
        for address in &addresses {
            // The gateway's interfaces as they are now: it joins networks after start-up.
            let own = gateway_networks.as_deref().and_then(|nets| {
                own_address(nets, *address)
                    .map(|n| (n, DenyCategory::HostAddress))
                    .or_else(|| {
                        plugin_network(nets, &plugin_addresses, *address)
                            .map(|n| (n, DenyCategory::PluginNetwork))
                    })
            });
            if let Some((network, category)) = own {
                let refusal = Refusal::AlwaysDenied {
                    address: *address,
                    network,
                    category,
                };
                return Err(self.refuse(plugin, target, refusal));
            }
            match policy.decide(&entry.granted_egress, target, *address) {
                Decision::Allowed {
                    rule: matched,
                    index,
                } => {
                    rule.get_or_insert(matched);
                    granted.get_or_insert(index);
                }
                Decision::Denied(refusal) => return Err(self.refuse(plugin, target, refusal)),
            }
        }
        let rule = rule.unwrap_or_default();
        // The usage receipt's item: the granted rule as granted, not the matched pattern.
        let granted = granted
            .and_then(|i| entry.granted_egress.get(i))
            .map(berth_contract::wire::usage::egress_item);
        let budget = settings.connect_timeout.saturating_sub(started.elapsed());
        // Only the checked addresses are dialed: the name is never resolved again.
        let connected = tokio::time::timeout(budget, async {
            let mut last = io::Error::other("no address");
            for address in &addresses {
                match TcpStream::connect(SocketAddr::new(*address, target.port)).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
        .await;
        let shown = addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let stream = match connected {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(self.failed(
                    plugin,
                    &rule,
                    Error::EgressUnreachable(format!("cannot connect to {target} ({shown}): {e}")),
                ));
            }
            Err(_) => {
                return Err(self.failed(
                    plugin,
                    &rule,
                    Error::EgressTimeout(format!(
                        "connecting to {target} ({shown}) took longer than {}ms (--egress-connect-timeout)",
                        settings.connect_timeout.as_millis()
                    )),
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        let address = stream
            .peer_addr()
            .map_err(|e| Error::EgressUnreachable(format!("{target}: {e}")))?;
        let metrics = self.inner.gateway.metrics();
        metrics
            .egress_connect
            .with_label_values(&[plugin])
            .observe(started.elapsed().as_secs_f64());
        metrics
            .egress_requests
            .with_label_values(&[plugin, rule.as_str(), "allowed"])
            .inc();
        if let Some(item) = granted {
            let usage = self.inner.gateway.usage();
            usage.record_destination(plugin, &item, &target.to_string());
            usage.record(plugin, berth_contract::wire::UsageKind::Egress, item);
        }
        Ok(Upstream {
            stream: Metered {
                inner: stream,
                sent: metrics.egress_bytes.with_label_values(&[plugin, "sent"]),
                received: metrics
                    .egress_bytes
                    .with_label_values(&[plugin, "received"]),
                activity: Activity::new(),
            },
            address,
        })
    }

    /// A refused destination: counted, audited, and the 403 that explains it.
    fn refuse(&self, plugin: &str, target: &Target, refusal: Refusal) -> Error {
        let gateway = &self.inner.gateway;
        let address = refusal.address();
        let grant = refusal.grant_hint(target);
        let rule = refusal.rule();
        let mut message = format!("egress to {target}");
        if let Some(address) = address {
            message.push_str(&format!(" ({address})"));
        }
        message.push_str(&format!(" refused for plugin {plugin}: {rule}"));
        match &grant {
            Some(grant) => message.push_str(&format!("; a grant of `{grant}` would allow it")),
            None => message.push_str("; this address can never be granted"),
        }
        let metrics = gateway.metrics();
        metrics
            .egress_requests
            .with_label_values(&[plugin, refusal.metric_bucket(), "denied"])
            .inc();
        metrics.record_denial(plugin, "egress");
        gateway.auditor().record(
            AuditEvent::new(actor(plugin), types::SECURITY, "denied")
                .plugin(plugin)
                .details(json!({
                    "permission": "egress",
                    "code": "egress_denied",
                    "target": target.to_string(),
                    "address": address.map(|a| a.to_string()),
                    "rule": rule,
                    "grantable": refusal.grantable(),
                })),
        );
        Error::EgressDenied {
            message,
            details: json!({
                "plugin": plugin,
                "host": target.host.to_string(),
                "port": target.port,
                "address": address.map(|a| a.to_string()),
                "rule": rule,
                "grantable": refusal.grantable(),
                "grant": grant,
            }),
        }
    }

    /// An allowed destination that could not be reached: counted under its rule.
    fn failed(&self, plugin: &str, host_label: &str, error: Error) -> Error {
        self.inner
            .gateway
            .metrics()
            .egress_requests
            .with_label_values(&[plugin, host_label, "failed"])
            .inc();
        error
    }

    fn tunnel_slot(&self, plugin: &str) -> Result<TunnelSlot, Error> {
        let limit = self.inner.settings.max_tunnels;
        let mut tunnels = self.inner.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        let open = tunnels.entry(plugin.to_owned()).or_default();
        if *open >= limit {
            self.inner
                .gateway
                .metrics()
                .egress_requests
                .with_label_values(&[plugin, "denied:tunnel_limit", "denied"])
                .inc();
            return Err(Error::TooManyTunnels {
                plugin: plugin.to_owned(),
                limit,
            });
        }
        *open += 1;
        Ok(TunnelSlot {
            inner: self.inner.clone(),
            plugin: plugin.to_owned(),
        })
    }

    /// Copies bytes both ways until either side closes, the tunnel idles out, the proxy
    /// stops, or the directory no longer grants the destination.
    async fn tunnel(
        &self,
        upgraded: hyper::upgrade::Upgraded,
        mut upstream: Upstream,
        entry: Arc<PluginEntry>,
        target: Target,
        changes: watch::Receiver<Arc<DirectorySnapshot>>,
    ) {
        let plugin = entry.name();
        let activity = upstream.stream.activity.clone();
        let address = upstream.address.ip();
        let mut closing = self.inner.closing.subscribe();
        let ended = tokio::select! {
            _ = relay(upgraded, &mut upstream.stream, self.inner.settings.splice_tunnels) => "closed",
            () = idle_for(&activity, self.inner.settings.idle_timeout) => "idle",
            () = revoked(changes, &self.inner.settings.policy, plugin, &target, address) => "revoked",
            _ = closing.wait_for(|closing| *closing) => "shutdown",
        };
        tracing::debug!(plugin, %target, ended, "egress tunnel closed");
        if ended == "revoked" {
            self.inner.gateway.auditor().record(
                AuditEvent::new(actor(plugin), types::SECURITY, "closed")
                    .plugin(plugin)
                    .details(json!({
                        "permission": "egress",
                        "reason": "the directory no longer grants this destination",
                        "target": target.to_string(),
                        "address": address.to_string(),
                    })),
            );
        }
    }
}

/// Copies a tunnel's bytes both ways until both sides are done. The plugin's side is the
/// proxy's own TCP connection under hyper's upgrade: bytes hyper had already read past the
/// `CONNECT` head go first, then the kernel moves the rest (`splice`). Any other kind of
/// connection, or `splice_tunnels` off, is copied through user-space buffers.
async fn relay(
    upgraded: hyper::upgrade::Upgraded,
    upstream: &mut Metered,
    splice_tunnels: bool,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let plain = if splice_tunnels {
        upgraded.downcast::<TokioIo<TcpStream>>()
    } else {
        Err(upgraded)
    };
    match plain {
        Ok(parts) => {
            if !parts.read_buf.is_empty() {
                upstream.write_all(&parts.read_buf).await?;
            }
            let client = parts.io.into_inner();
            splice::bidirectional(
                &client,
                &upstream.inner,
                splice::Meter {
                    counter: &upstream.sent,
                    activity: &upstream.activity,
                },
                splice::Meter {
                    counter: &upstream.received,
                    activity: &upstream.activity,
                },
            )
            .await
            .map(drop)
        }
        Err(upgraded) => tokio::io::copy_bidirectional_with_sizes(
            &mut TokioIo::new(upgraded),
            upstream,
            TUNNEL_BUFFER,
            TUNNEL_BUFFER,
        )
        .await
        .map(drop),
    }
}

/// Waits until the directory stops granting `target` at `address` to `plugin` (grant
/// revoked or expired, plugin removed). Checks the current view first.
async fn revoked(
    mut changes: watch::Receiver<Arc<DirectorySnapshot>>,
    policy: &EgressPolicy,
    plugin: &str,
    target: &Target,
    address: IpAddr,
) {
    loop {
        let granted = {
            let snapshot = changes.borrow_and_update();
            snapshot.get(plugin).is_some_and(|entry| {
                matches!(
                    policy.decide(&entry.granted_egress, target, address),
                    Decision::Allowed { .. }
                )
            })
        };
        if !granted {
            return;
        }
        if changes.changed().await.is_err() {
            // The directory is gone with the gateway; the tunnel ends another way.
            std::future::pending::<()>().await;
        }
    }
}

/// Returns once nothing moved for `limit`.
async fn idle_for(activity: &Activity, limit: Duration) {
    loop {
        let idle = activity.idle();
        if idle >= limit {
            return;
        }
        tokio::time::sleep(limit - idle).await;
    }
}

struct CloseTunnelsOnDrop(Arc<Inner>);

impl Drop for CloseTunnelsOnDrop {
    fn drop(&mut self) {
        self.0.closing.send_replace(true);
    }
}

/// One open tunnel of a plugin; dropping it frees the place.
struct TunnelSlot {
    inner: Arc<Inner>,
    plugin: String,
}

impl Drop for TunnelSlot {
    fn drop(&mut self) {
        let mut tunnels = self.inner.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(open) = tunnels.get_mut(&self.plugin) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                tunnels.remove(&self.plugin);
            }
        }
    }
}

/// A connection to a checked destination.
struct Upstream {
    stream: Metered,
    address: SocketAddr,
}

/// When bytes last moved, for the idle timeout.
pub(super) struct Activity {
    start: Instant,
    last_millis: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            last_millis: AtomicU64::new(0),
        })
    }

    pub(super) fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    pub(super) fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// The destination socket, counting bytes each way and noting activity.
struct Metered {
    inner: TcpStream,
    sent: prometheus::IntCounter,
    received: prometheus::IntCounter,
    activity: Arc<Activity>,
}

impl AsyncRead for Metered {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            let n = buf.filled().len().saturating_sub(before);
            if n > 0 {
                this.received.inc_by(n as u64);
                this.activity.touch();
            }
        }
        poll
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll
            && n > 0
        {
            this.sent.inc_by(n as u64);
            this.activity.touch();
        }
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `(user, token)` from `Basic base64(user:token)`.
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, token) = text.split_once(':')?;
    Some((user.to_owned(), token.to_owned()))
}

/// The endpoint addresses of every plugin in the directory.
fn plugin_addresses(snapshot: &DirectorySnapshot) -> Vec<IpAddr> {
    snapshot
        .plugins()
        .flat_map(|entry| entry.endpoints.iter())
        .filter_map(
            |endpoint| match Target::parse_authority(endpoint.authority(), Some(80)) {
                Ok(Target {
                    host: TargetHost::Ip(ip),
                    ..
                }) => Some(ip),
                _ => None,
            },
        )
        .collect()
}

/// True when `peer` is the address of one of the plugin's instances.
fn from_instance(entry: &PluginEntry, peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    entry.endpoints.iter().any(|endpoint| {
        matches!(
            Target::parse_authority(endpoint.authority(), Some(80)),
            Ok(Target { host: TargetHost::Ip(ip), .. }) if ip.to_canonical() == peer
        )
    })
}

/// Removes the headers that belong to one hop: the standard ones and those `Connection`
/// names, and the proxy credential, which must never reach a destination.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

/// The audit actor of a plugin.
fn actor(plugin: &str) -> String {
    format!("plugin:{plugin}")
}

fn bad_request(message: String) -> Error {
    Error::BadRequest {
        code: "bad_proxy_request",
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_split_at_the_first_colon() {
        let encoded = base64::engine::general_purpose::STANDARD.encode("calc:tok:en");
        let value = HeaderValue::from_str(&format!("basic {encoded}")).unwrap();
        assert_eq!(
            basic_credentials(&value),
            Some(("calc".into(), "tok:en".into()))
        );
        for bad in ["Bearer abc", "Basic !!!", "Basic", "Basic bm9jb2xvbg=="] {
            assert_eq!(
                basic_credentials(&HeaderValue::from_static(bad)),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn hop_by_hop_headers_and_the_proxy_credential_are_removed() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("accept", "*/*"),
        ] {
            headers.insert(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("accept"));
    }
}
