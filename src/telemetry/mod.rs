//! Prometheus metrics and logging setup.
//!
//! Invariant: metric labels never carry ids, tokens or data — only route patterns,
//! methods, status codes and operation names — so cardinality is bounded and nothing
//! sensitive is exported.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
};

/// All metrics of the appliance.
pub struct Metrics {
    registry: Registry,
    /// Requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// Request latency by route pattern.
    pub http_latency: HistogramVec,
    /// DEK cache hits.
    pub dek_cache_hits: IntCounter,
    /// DEK cache misses (HSM unwrap needed).
    pub dek_cache_misses: IntCounter,
    /// HSM calls by operation and result.
    pub hsm_calls: IntCounterVec,
    /// HSM call latency by operation.
    pub hsm_latency: HistogramVec,
    /// Requests per group-commit transaction.
    pub commit_batch_size: Histogram,
    /// Duration of the durable commit (fsync) of one batch.
    pub commit_duration: Histogram,
    /// Audit events appended.
    pub audit_events: IntCounter,
    /// 1 when the appliance refuses to serve data because of an integrity alarm.
    pub integrity_alarm: IntGauge,
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("strongroom".into()), None)?;
        let http_requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests by route, method and status"),
            &["route", "method", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new("http_request_duration_seconds", "HTTP request latency by route")
                .buckets(latency_buckets()),
            &["route"],
        )?;
        let dek_cache_hits = IntCounter::new("dek_cache_hits_total", "Data-key cache hits")?;
        let dek_cache_misses = IntCounter::new("dek_cache_misses_total", "Data-key cache misses")?;
        let hsm_calls = IntCounterVec::new(
            Opts::new("hsm_calls_total", "HSM calls by operation and result"),
            &["op", "result"],
        )?;
        let hsm_latency = HistogramVec::new(
            HistogramOpts::new("hsm_call_duration_seconds", "HSM call latency by operation").buckets(latency_buckets()),
            &["op"],
        )?;
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new("group_commit_batch_size", "Requests per LMDB write transaction")
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0]),
        )?;
        let commit_duration = Histogram::with_opts(
            HistogramOpts::new(
                "group_commit_fsync_duration_seconds",
                "Durable commit time of one batch",
            )
            .buckets(latency_buckets()),
        )?;
        let audit_events = IntCounter::new("audit_events_total", "Audit events appended")?;
        let integrity_alarm = IntGauge::new("integrity_alarm", "1 while an integrity alarm blocks data access")?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_latency.clone()))?;
        registry.register(Box::new(dek_cache_hits.clone()))?;
        registry.register(Box::new(dek_cache_misses.clone()))?;
        registry.register(Box::new(hsm_calls.clone()))?;
        registry.register(Box::new(hsm_latency.clone()))?;
        registry.register(Box::new(commit_batch_size.clone()))?;
        registry.register(Box::new(commit_duration.clone()))?;
        registry.register(Box::new(audit_events.clone()))?;
        registry.register(Box::new(integrity_alarm.clone()))?;
        Ok(Self {
            registry,
            http_requests,
            http_latency,
            dek_cache_hits,
            dek_cache_misses,
            hsm_calls,
            hsm_latency,
            commit_batch_size,
            commit_duration,
            audit_events,
            integrity_alarm,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Register a metric owned by another module (e.g. `privacy`); same label rules.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> Result<(), prometheus::Error> {
        self.registry.register(collector)
    }
}

/// Log to stderr; level from `STRONGROOM_LOG` (default `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRONGROOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
