//! `strongroom serve`: open the parts, start HTTPS and metrics, notify systemd, run
//! until SIGTERM/SIGINT, then record `service_stop` and exit 0.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;

use super::boot;
use super::init::is_initialised;
use super::CliError;
use crate::api;
use crate::audit::integrity::{Alarm, AlarmKind, Integrity};
use crate::audit::{Action, PendingEvent};
use crate::clock::Clock;
use crate::config::Config;
use crate::keys::KeyService;

/// What a running server printed for scripts: its addresses.
pub struct Bound {
    /// HTTPS address.
    pub https: std::net::SocketAddr,
    /// Metrics address.
    pub metrics: std::net::SocketAddr,
}

/// Run `serve` with the config at `path`.
pub fn run(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path)?;
    serve(&config, |_| {})
}

/// Serve `config`; `on_ready` is called once both listeners are bound.
pub fn serve(config: &Config, on_ready: impl FnOnce(&Bound)) -> Result<(), CliError> {
    if !is_initialised(&config.data_dir) {
        return Err(CliError::config(format!(
            "{} is not initialised; run `strongroom init --config <file>` first",
            config.data_dir.display()
        )));
    }
    let tls = api::tls_config(&config.tls_cert, &config.tls_key).map_err(|e| CliError::config(e.to_string()))?;
    let opened = open(config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::runtime(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async move {
        let Opened {
            state,
            integrity,
            tpm_problem,
            random,
        } = opened;
        record(
            &state,
            PendingEvent::new(Action::ServiceStart, "system", "audit", "startup")
                .detail("version", env!("CARGO_PKG_VERSION")),
            "service_start",
        )
        .await?;
        // Rollback and tamper checks; a failure raises the alarm and we serve in alarm
        // mode (audit endpoints and /readyz explain; data endpoints answer 503).
        match tpm_problem {
            Some(why) => integrity.raise(AlarmKind::Rollback, &why).await,
            None => match integrity.startup().await {
                Ok(check) => tracing::info!(?check, "integrity check passed"),
                Err(why) => tracing::error!(%why, "integrity check failed; serving in alarm mode"),
            },
        }
        integrity.spawn_background();
        spawn_key_and_governance_work(&state, &integrity);
        // A listener that cannot bind ends the start without a `service_stop`, as before.
        let result = listen_until_stopped(config, &state, tls, random, on_ready).await?;
        record(
            &state,
            PendingEvent::new(Action::ServiceStop, "system", "audit", "shutdown"),
            "service_stop",
        )
        .await?;
        if let Err(e) = integrity.seal_if_active("shutdown").await {
            tracing::error!(error = %e, "could not seal a checkpoint at shutdown");
        }
        result
    })
}

/// What `serve` runs: the composed state and what start-up found about the TPM.
struct Opened {
    state: web::Data<api::AppState>,
    integrity: Arc<Integrity>,
    /// Why the TPM counter could not be opened (raised as a rollback alarm).
    tpm_problem: Option<String>,
    random: crate::random::Random,
}

/// Open the HSM, TPM, store and integrity state, and compose the services.
fn open(config: &Config) -> Result<Opened, CliError> {
    let hsm = boot::open_hsm(config)?;
    let public_key = boot::signing_key(&hsm)?;
    let counter = boot::open_counter(config)?;
    let metrics = boot::metrics()?;
    let clock = Clock::system();
    let store = boot::open_store(config, metrics.clone(), clock.clone())?;
    let appliance_id = store
        .read()
        .and_then(|t| t.appliance_id())
        .map_err(|e| CliError::runtime(format!("cannot read the data directory: {e}")))?
        .ok_or_else(|| CliError::runtime("the data directory has no appliance id (incomplete init?)"))?;
    let (tpm, tpm_problem) = match counter {
        Ok(w) => (Some(w), None),
        Err(lost) => (None, Some(lost.to_string())),
    };
    let integrity = Integrity::new(
        store.clone(),
        hsm.clone(),
        tpm,
        &appliance_id,
        config.tpm.nv_index,
        public_key,
        Alarm::new(metrics.integrity_alarm.clone()),
        boot::seal_policy(config),
    );
    let random = crate::random::Random::os();
    let keys = KeyService::new(
        hsm,
        config.keys.dek_cache_capacity,
        Duration::from_secs(config.keys.dek_cache_ttl_secs),
        metrics.clone(),
        random,
    );
    let state = web::Data::new(crate::app::compose(crate::app::Parts {
        store,
        keys,
        integrity: integrity.clone(),
        metrics,
        clock,
        random,
        max_body: config.max_body_bytes,
        kek_retention_secs: i64::try_from(config.keys.kek_retention_secs).unwrap_or(i64::MAX),
        privacy_policy: config.privacy_policy(),
        quorum: config.quorum().cloned(),
    }));
    Ok(Opened {
        state,
        integrity,
        tpm_problem,
        random,
    })
}

/// Record a service lifecycle event durably.
async fn record(state: &api::AppState, event: PendingEvent, name: &str) -> Result<(), CliError> {
    state
        .store
        .record(event)
        .await
        .map(|_| ())
        .map_err(|e| CliError::runtime(format!("cannot write {name}: {e}")))
}

/// Finish governance operations approved but not finished before a stop; finish
/// interrupted rotations and destroy retired KEKs whose window passed, now and every ten
/// minutes — but not under an integrity alarm: key destruction and rotation act on what
/// the store says, and then the store is not to be trusted.
fn spawn_key_and_governance_work(state: &api::AppState, integrity: &Arc<Integrity>) {
    let governance = state.governance.clone();
    tokio::spawn(async move {
        if let Err(e) = governance.resume().await {
            tracing::error!(error = %e, "cannot resume governance proposals");
        }
    });
    let rotation = state.rotation.clone();
    let integrity = integrity.clone();
    tokio::spawn(async move {
        loop {
            if integrity.alarm().reason().is_some() {
                tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                continue;
            }
            if let Err(e) = rotation.resume_all().await {
                tracing::error!(error = %e, "outstanding key rotations failed; retrying in 10 minutes");
            }
            if let Err(e) = rotation.reap().await {
                tracing::error!(error = %e, "destroying retired KEKs failed");
            }
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        }
    });
}

/// Bind HTTPS and metrics, tell scripts and systemd, serve until SIGTERM/SIGINT
/// (actix-web stops gracefully), then stop the metrics server. The outer error is a
/// listener that could not bind; the inner one the server's own.
async fn listen_until_stopped(
    config: &Config,
    state: &web::Data<api::AppState>,
    tls: rustls::ServerConfig,
    random: crate::random::Random,
    on_ready: impl FnOnce(&Bound),
) -> Result<Result<(), CliError>, CliError> {
    let (https, https_addr) = api::https_server(state.clone(), config.listen, tls, random)
        .map_err(|e| CliError::runtime(format!("cannot listen on {}: {e}", config.listen)))?;
    let (metrics_srv, metrics_addr) = api::metrics_server(Arc::clone(&state.metrics), config.metrics_listen)
        .map_err(|e| CliError::runtime(format!("cannot listen on {}: {e}", config.metrics_listen)))?;
    let metrics_handle = metrics_srv.handle();
    tokio::spawn(metrics_srv);
    let bound = Bound {
        https: https_addr,
        metrics: metrics_addr,
    };
    println!(
        "strongroom: serving https://{} metrics http://{}/metrics",
        bound.https, bound.metrics
    );
    on_ready(&bound);
    notify_systemd("READY=1");
    let result = https.await;
    notify_systemd("STOPPING=1");
    metrics_handle.stop(true).await;
    Ok(result.map_err(|e| CliError::runtime(format!("server error: {e}"))))
}

/// `sd_notify` without libsystemd: one datagram to `$NOTIFY_SOCKET`, if set.
fn notify_systemd(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}
