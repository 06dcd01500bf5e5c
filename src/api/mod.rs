//! The HTTPS REST API (SPEC §6): routing, shared state, request ids and HTTP metrics.
//!
//! Handlers live in one file per resource and all follow the same path: build a
//! [`ctx::Ctx`], authenticate, authorise into a scope, parse input, call the domain
//! service (which commits the change with its audit event), answer.

pub mod audit;
pub mod body;
pub mod ctx;
pub mod erasure;
pub mod error;
pub mod health;
pub mod proposals;
pub mod query;
pub mod records;
pub mod tenants;
pub mod tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::{Server, Service};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::{web, App, HttpMessage, HttpResponse, HttpServer};
use futures_util::FutureExt;

use crate::audit::integrity::Integrity;
use crate::clock::Clock;
use crate::erasure::ErasureService;
use crate::keys::rotation::Rotation;
use crate::keys::KeyService;
use crate::records::RecordService;
use crate::store::Store;
use crate::telemetry::Metrics;
use ctx::RequestId;
use error::ApiError;

/// State shared by every request.
pub struct AppState {
    /// LMDB store.
    pub store: Store,
    /// Key service.
    pub keys: KeyService,
    /// Records service.
    pub records: RecordService,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Clock.
    pub clock: Clock,
    /// Body limit in bytes.
    pub max_body: usize,
    /// Checkpoints, verification, alarm.
    pub integrity: Arc<Integrity>,
    /// KEK rotation and retirement.
    pub rotation: Rotation,
    /// Entity erasure.
    pub erasure: ErasureService,
    /// Differentially private queries.
    pub privacy: crate::privacy::PrivacyService,
    /// Multi-party governance.
    pub governance: crate::governance::Governance,
    /// Tenant lifecycle.
    pub tenants: crate::tenants::TenantService,
    /// Token minting and revocation.
    pub tokens: crate::tokens::TokenService,
    /// Randomness (request ids, token secrets).
    pub random: crate::random::Random,
}

impl AppState {
    /// The current integrity alarm, if any.
    pub fn alarm(&self) -> Option<String> {
        self.integrity.alarm().reason()
    }
}

fn new_request_id(random: &crate::random::Random) -> String {
    format!("req-{}", hex::encode(random.bytes::<8>()))
}

/// Routes of the public API.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/v1/admin/audit", web::get().to(audit::list))
        .route("/v1/admin/audit/verify", web::get().to(audit::verify))
        .route("/v1/admin/audit/checkpoint", web::get().to(audit::checkpoint))
        .route("/v1/admin/audit/public-key", web::get().to(audit::public_key))
        .route("/v1/admin/audit/export", web::get().to(audit::export))
        .route("/v1/admin/tenants", web::post().to(tenants::create))
        .route("/v1/admin/tenants", web::get().to(tenants::list))
        .route("/v1/admin/tenants/{tenant_id}/rotate", web::post().to(tenants::rotate))
        .route("/v1/admin/entity/{entity_id}", web::delete().to(erasure::erase))
        .route("/v1/query", web::post().to(query::query))
        .route("/v1/admin/proposals", web::post().to(proposals::create))
        .route("/v1/admin/proposals/{proposal_id}", web::get().to(proposals::get))
        .route(
            "/v1/admin/proposals/{proposal_id}/approvals",
            web::post().to(proposals::approve),
        )
        .route("/v1/admin/tokens", web::post().to(tokens::create))
        .route("/v1/admin/tokens/{token_id}", web::delete().to(tokens::revoke))
        .route("/v1/entities/{entity_id}/records", web::post().to(records::write))
        .route("/v1/entities/{entity_id}/records", web::get().to(records::list))
        .route(
            "/v1/entities/{entity_id}/records/{record_id}",
            web::get().to(records::get),
        );
}

/// Unknown paths and methods. Under `/v1` the request is authenticated and audited
/// like any other (SPEC §5: every request leaves an event); elsewhere a plain 404.
async fn not_found(req: actix_web::HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !req.path().starts_with("/v1/") {
        return Err(ApiError::not_found("no such endpoint"));
    }
    const UNKNOWN: ctx::RouteSpec<ctx::AnyToken> = ctx::RouteSpec::new(crate::audit::Action::DataAccess, ctx::AnyToken);
    let (ctx, _) = ctx::Ctx::open(&req, &state, &UNKNOWN, "endpoint:unknown".to_owned()).await?;
    let path: String = req.path().chars().take(200).collect();
    let message = format!("no such endpoint: {} {path}", req.method());
    ctx.finish(Err(ctx::Refusal::not_found(message))).await
}

/// Build the HTTPS server (not yet started). Returns it with its bound address.
/// Request ids are drawn from the injected `random`.
pub fn https_server(
    state: web::Data<AppState>,
    listen: SocketAddr,
    tls: rustls::ServerConfig,
    random: crate::random::Random,
) -> std::io::Result<(Server, SocketAddr)> {
    let request_id_header = HeaderName::from_static("x-request-id");
    let server = HttpServer::new(move || {
        let header = request_id_header.clone();
        App::new()
            .app_data(state.clone())
            .wrap_fn(move |req, srv| {
                let started = Instant::now();
                let id = new_request_id(&random);
                req.extensions_mut().insert(RequestId(id.clone()));
                let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
                let method = req.method().as_str().to_owned();
                let metrics = req.app_data::<web::Data<AppState>>().map(|s| s.metrics.clone());
                let header = header.clone();
                srv.call(req).map(move |res| {
                    res.map(|mut res| {
                        if let Some(m) = metrics {
                            let status = res.status().as_u16().to_string();
                            m.http_requests.with_label_values(&[&route, &method, &status]).inc();
                            m.http_latency
                                .with_label_values(&[&route])
                                .observe(started.elapsed().as_secs_f64());
                        }
                        if let Ok(v) = HeaderValue::from_str(&id) {
                            res.headers_mut().insert(header, v);
                        }
                        res
                    })
                })
            })
            .configure(routes)
            .default_service(web::to(not_found))
    })
    .bind_rustls_0_23(listen, tls)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no bound address"))?;
    Ok((server.run(), addr))
}

/// Build the plain-HTTP metrics server on `metrics_listen`.
pub fn metrics_server(metrics: Arc<Metrics>, listen: SocketAddr) -> std::io::Result<(Server, SocketAddr)> {
    let server = HttpServer::new(move || {
        let m = metrics.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                let m = m.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("text/plain; version=0.0.4")
                        .body(m.render())
                }
            }),
        )
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no bound address"))?;
    Ok((server.run(), addr))
}

/// Why the TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The certificate file is not valid PEM.
    #[error("invalid certificate PEM {path}: {source}")]
    CertPem {
        /// The file.
        path: String,
        /// The parse error.
        source: std::io::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {0}")]
    NoCert(String),
    /// The key file is not valid PEM.
    #[error("invalid key PEM {path}: {source}")]
    KeyPem {
        /// The file.
        path: String,
        /// The parse error.
        source: std::io::Error,
    },
    /// The key file holds no private key.
    #[error("no private key in {0}")]
    NoKey(String),
    /// rustls refused the protocol versions.
    #[error("{0}")]
    Protocol(rustls::Error),
    /// rustls refused the certificate/key pair.
    #[error("TLS certificate/key rejected: {0}")]
    Rejected(rustls::Error),
}

/// rustls server config: TLS 1.3 and 1.2 only, ring provider, the given PEM files.
pub fn tls_config(cert_pem: &std::path::Path, key_pem: &std::path::Path) -> Result<rustls::ServerConfig, TlsError> {
    let name = |p: &std::path::Path| p.display().to_string();
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|source| TlsError::Read { path: name(p), source });
    let certs: Vec<_> = rustls_pemfile::certs(&mut read(cert_pem)?.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::CertPem {
            path: name(cert_pem),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCert(name(cert_pem)));
    }
    let key = rustls_pemfile::private_key(&mut read(key_pem)?.as_slice())
        .map_err(|source| TlsError::KeyPem {
            path: name(key_pem),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey(name(key_pem)))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Protocol)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Rejected)
}
