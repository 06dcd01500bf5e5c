//! Per-request context: request id, the action being attempted, and the audit trail of
//! refusals.
//!
//! Invariant: every `/v1` request ends in exactly one audit event — either the one
//! committed with its change/read by the service, or the one [`Ctx::reject`] commits
//! for a refusal (401 → `auth_denied`, 403 → `access_denied`, other errors → the
//! attempted action with outcome `failed`).

use actix_web::{web, HttpMessage, HttpRequest};

use super::error::ApiError;
use super::AppState;
use crate::audit::{Action, Outcome, PendingEvent};
use crate::auth::{authenticate, Denial, Principal};
use crate::domain::TenantId;

/// The request id set by the middleware.
#[derive(Clone)]
pub struct RequestId(pub String);

/// Context of one request.
pub struct Ctx {
    /// Shared state.
    pub state: web::Data<AppState>,
    /// Request id.
    pub request_id: String,
    /// Action attempted.
    pub action: Action,
    /// Resource addressed.
    pub resource: String,
    /// Authenticated principal, once known.
    pub principal: Option<Principal>,
    /// Served under an integrity alarm (governance: the alarm is acknowledged through it;
    /// the handler decides what it allows).
    pub alarm_exempt: bool,
}

/// Render a path segment for the `resource` field: the id if valid, else a marker (so
/// garbage input is not copied into the log).
pub fn resource_id(raw: &str) -> &str {
    if crate::domain::EntityId::parse(raw).is_ok() {
        raw
    } else {
        "<invalid>"
    }
}

impl Ctx {
    /// Context for `action` on `resource`.
    pub fn new(req: &HttpRequest, state: &web::Data<AppState>, action: Action, resource: String) -> Self {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        Self {
            state: state.clone(),
            request_id,
            action,
            resource,
            principal: None,
            alarm_exempt: false,
        }
    }

    /// The actor string for events.
    pub fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |p| p.actor().to_string())
    }

    /// The tenant of the caller, if tenant-scoped.
    pub fn tenant(&self) -> Option<TenantId> {
        self.principal.as_ref().and_then(|p| p.tenant_id().cloned())
    }

    /// A pending event for this request's action, outcome `allowed`.
    pub fn event(&self) -> PendingEvent {
        let ev = PendingEvent::new(
            self.action,
            self.actor(),
            self.resource.clone(),
            self.request_id.clone(),
        )
        .tenant(self.tenant());
        // The actor name is chosen by whoever minted the token; the token id is what
        // attributes the request to one credential.
        match &self.principal {
            Some(p) => ev.detail("token_id", p.token_id()),
            None => ev,
        }
    }

    /// Authenticate the bearer token; a failure is audited (`auth_denied`) and → 401.
    pub async fn authenticate(&mut self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        match authenticate(&self.state.store, &self.state.clock, header) {
            Ok(Ok(p)) => {
                self.principal = Some(p.clone());
                // Audit reads stay available under an alarm: they are how operators see why.
                let audit_read = self.alarm_exempt || matches!(self.action, Action::AuditRead | Action::AuditExport);
                if let (false, Err(alarm)) = (audit_read, self.state.guard_integrity()) {
                    return Err(self.reject(alarm).await);
                }
                Ok(p)
            }
            Ok(Err(failure)) => {
                let mut ev = self.event();
                ev.action = Action::AuthDenied;
                ev.outcome = Outcome::Denied;
                ev = ev
                    .detail("reason", failure.reason())
                    .detail("attempted", action_name(self.action));
                Err(self.commit_refusal(ev, ApiError::unauthorized()).await)
            }
            Err(e) => {
                tracing::error!(request_id = %self.request_id, error = %e, "token lookup failed");
                Err(ApiError::internal().with_request_id(&self.request_id))
            }
        }
    }

    /// Turn an authorisation denial into an audited 403.
    pub async fn deny(&self, denial: Denial) -> ApiError {
        let message = match denial {
            Denial::MissingPermission(p) => format!("this token lacks the {} permission", p.as_str()),
            Denial::WrongKind => match self.principal.as_ref().and_then(|p| p.tenant_id()) {
                Some(_) => "this operation needs an operator token".to_owned(),
                None => "operator tokens cannot do this; use a tenant token".to_owned(),
            },
        };
        self.reject(ApiError::forbidden(message)).await
    }

    /// Audit a refused request and return the error with the request id attached.
    pub async fn reject(&self, err: ApiError) -> ApiError {
        let mut ev = self.event().detail("error", err.code.as_str());
        match err.status.as_u16() {
            401 => {
                ev.action = Action::AuthDenied;
                ev.outcome = Outcome::Denied;
            }
            403 => {
                ev = ev.detail("attempted", action_name(self.action));
                ev.action = Action::AccessDenied;
                ev.outcome = Outcome::Denied;
            }
            _ => ev.outcome = Outcome::Failed,
        }
        self.commit_refusal(ev, err).await
    }

    /// A 404 for a record or entity of the caller's tenant. Audited as `access_denied`
    /// (outcome `denied`) whether or not another tenant uses the id: the answer and the
    /// caller's own audit view are the same either way, so neither reveals another
    /// tenant's entities (SPEC §5, §9).
    pub async fn reject_not_found(&self) -> ApiError {
        let mut ev = self
            .event()
            .detail("error", "not_found")
            .detail("attempted", action_name(self.action));
        ev.action = Action::AccessDenied;
        ev.outcome = Outcome::Denied;
        self.commit_refusal(ev, ApiError::not_found("not found")).await
    }

    async fn commit_refusal(&self, ev: PendingEvent, err: ApiError) -> ApiError {
        if let Err(e) = self.state.store.record(ev).await {
            // No answer without its event: a refusal that cannot be audited is a 500.
            tracing::error!(request_id = %self.request_id, error = %e, "cannot record audit event");
            return ApiError::internal().with_request_id(&self.request_id);
        }
        err.with_request_id(&self.request_id)
    }

    /// A failed commit → 500. A refused change already wrote this request's event
    /// (outcome `failed`), so it is not audited twice; any other failure is.
    pub async fn commit_failed(&self, e: &crate::store::CommitError) -> ApiError {
        match e {
            crate::store::CommitError::Refused(..) => {
                tracing::error!(request_id = %self.request_id, error = %e, "change refused by the store");
                ApiError::internal().with_request_id(&self.request_id)
            }
            e => self.internal(e).await,
        }
    }

    /// Log an internal error with its cause and return an opaque 500 (audited).
    pub async fn internal(&self, cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(request_id = %self.request_id, error = %cause, "internal error");
        self.reject(ApiError::internal()).await
    }
}

fn action_name(a: Action) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
