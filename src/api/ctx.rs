//! The request pipeline: every `/v1` handler opens a [`Ctx`] from its route's declared
//! [`RouteSpec`] and ends by consuming it with [`Ctx::finish`] (or [`Ctx::record_and_answer`]).
//!
//! Invariant: every `/v1` request ends in exactly one audit event, by construction:
//! - [`Ctx::open`] authenticates (a failure is audited `auth_denied`, 401), applies the
//!   route's [`AlarmPolicy`] (503 `integrity_alarm`, audited `failed`) and authorises
//!   against the route's [`Grant`] (403, audited `access_denied`); only then does the
//!   handler get the context and the grant's proof value;
//! - the handler's work yields `Result<_, Refusal>`; a success is answered as is (the
//!   service committed the request's event with its change or read), a [`Refusal`] is
//!   mapped to both its JSON error and its audit event in one place ([`Ctx::finish`]);
//!   [`Refusal::Recorded`] says the writer already recorded this request's `failed` event,
//!   so it is answered without a second one;
//! - `Ctx` is `#[must_use]` and is consumed by `finish`, so a handler cannot answer
//!   without passing through the one place that audits refusals.

use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};

use super::error::ApiError;
use super::AppState;
use crate::audit::{Action, Outcome, PendingEvent};
use crate::auth::{authenticate, AnyScope, Authorized, Denial, OperatorScope, Permission, Principal, TenantScope};
use crate::domain::TenantId;
use crate::store::CommitError;

/// The request id set by the middleware.
#[derive(Clone)]
pub struct RequestId(pub String);

/// What a route does under an integrity alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlarmPolicy {
    /// 503 `integrity_alarm` (data endpoints).
    Refuse,
    /// Served (audit reads — how operators see why — and governance, through which a
    /// rollback alarm is acknowledged; the handler decides what it allows).
    Serve,
}

/// Who may call a route, and the proof value the handler receives.
pub trait Grant {
    /// The authorisation proof handed to the handler.
    type Proof;
    /// Check the principal.
    fn authorize(&self, principal: &Principal) -> Result<Self::Proof, Denial>;
}

/// A tenant token holding the permission → `Authorized<TenantScope>`.
pub struct TenantOnly(pub Permission);
/// An operator token holding the permission → `Authorized<OperatorScope>`.
pub struct OperatorOnly(pub Permission);
/// Either kind of token holding the permission → `Authorized<AnyScope>`.
pub struct EitherKind(pub Permission);
/// Any valid token (the request's own payload carries the authority, e.g. a signature).
pub struct AnyToken;

impl Grant for TenantOnly {
    type Proof = Authorized<TenantScope>;
    fn authorize(&self, principal: &Principal) -> Result<Self::Proof, Denial> {
        principal.tenant(self.0)
    }
}
impl Grant for OperatorOnly {
    type Proof = Authorized<OperatorScope>;
    fn authorize(&self, principal: &Principal) -> Result<Self::Proof, Denial> {
        principal.operator(self.0)
    }
}
impl Grant for EitherKind {
    type Proof = Authorized<AnyScope>;
    fn authorize(&self, principal: &Principal) -> Result<Self::Proof, Denial> {
        principal.either(self.0)
    }
}
impl Grant for AnyToken {
    type Proof = Principal;
    fn authorize(&self, principal: &Principal) -> Result<Self::Proof, Denial> {
        Ok(principal.clone())
    }
}

/// A route's declaration: the audit action it records, who may call it, what it does
/// under an alarm. One `const` per route, next to its handler.
pub struct RouteSpec<G: Grant> {
    /// The action of the request's audit event.
    pub action: Action,
    /// Who may call it.
    pub grant: G,
    /// Behaviour under an integrity alarm.
    pub alarm: AlarmPolicy,
    /// The resource is the caller's tenant (`tenant:<id>`), known once authenticated.
    pub resource_is_caller_tenant: bool,
}

impl<G: Grant> RouteSpec<G> {
    /// A data route: refused under an alarm.
    pub const fn new(action: Action, grant: G) -> Self {
        Self {
            action,
            grant,
            alarm: AlarmPolicy::Refuse,
            resource_is_caller_tenant: false,
        }
    }
    /// Served under an integrity alarm.
    pub const fn served_under_alarm(mut self) -> Self {
        self.alarm = AlarmPolicy::Serve;
        self
    }
    /// The resource is `tenant:<caller's tenant>`.
    pub const fn on_caller_tenant(mut self) -> Self {
        self.resource_is_caller_tenant = true;
        self
    }
}

/// Why a request is refused. Each variant fixes both the answer and the audit event.
#[derive(Debug)]
pub enum Refusal {
    /// A policy refusal: audited `access_denied` (outcome `denied`, `attempted`).
    Denied(ApiError),
    /// Invalid input, conflict, not found…: audited as the attempted action, `failed`.
    Failed(ApiError),
    /// A record or entity not in the caller's tenant: 404, audited `access_denied`
    /// whether or not another tenant uses the id (SPEC §5, §9: existence is not leaked).
    HiddenNotFound,
    /// The store already recorded this request's event (outcome `failed`) with the
    /// refused change: answered without a second event.
    Recorded(ApiError),
    /// The store refused a change after recording its event: logged, opaque 500, no
    /// second event.
    RecordedInternal(String),
    /// The HSM/TPM failed: logged, 503 `backend_unavailable`, audited `failed`.
    Backend(String),
    /// Anything else: logged, opaque 500, audited `failed`.
    Internal(String),
}

impl Refusal {
    /// 400 `invalid_request`.
    pub fn invalid(message: impl std::fmt::Display) -> Self {
        Self::Failed(ApiError::invalid(message.to_string()))
    }
    /// 404 `not_found` with a message (audited `failed`).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::Failed(ApiError::not_found(message))
    }
    /// 409 `conflict` (audited `failed`).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Failed(ApiError::conflict(message))
    }
    /// 403 `forbidden` (audited `access_denied`).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Denied(ApiError::forbidden(message))
    }
    /// 500 with its cause logged.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }
    /// A failed commit: a refused change already wrote this request's event (outcome
    /// `failed`), so it is not audited twice; any other failure is.
    pub fn commit(e: &CommitError) -> Self {
        match e {
            CommitError::Refused(..) => Self::RecordedInternal(format!("change refused by the store: {e}")),
            e => Self::Internal(e.to_string()),
        }
    }
}

/// Context of one request, open once authenticated and authorised.
#[must_use = "a request context must be consumed by `finish`, which audits refusals"]
pub struct Ctx {
    /// Shared state.
    pub state: web::Data<AppState>,
    /// Request id.
    pub request_id: String,
    action: Action,
    resource: String,
    principal: Option<Principal>,
}

pub use crate::domain::loggable_id as resource_id;

impl Ctx {
    /// Authenticate, apply the alarm policy and authorise the request against `spec`.
    /// Every refusal here is audited before it is returned.
    pub async fn open<G: Grant>(
        req: &HttpRequest,
        state: &web::Data<AppState>,
        spec: &RouteSpec<G>,
        resource: String,
    ) -> Result<(Self, G::Proof), ApiError> {
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let mut ctx = Self {
            state: state.clone(),
            request_id,
            action: spec.action,
            resource,
            principal: None,
        };
        let principal = ctx.authenticate(req).await?;
        if spec.alarm == AlarmPolicy::Refuse {
            if let Some(why) = state.alarm() {
                return Err(ctx.refuse(Refusal::Failed(ApiError::integrity_alarm(why))).await);
            }
        }
        if spec.resource_is_caller_tenant {
            if let Some(t) = principal.tenant_id() {
                ctx.resource = format!("tenant:{t}");
            }
        }
        match spec.grant.authorize(&principal) {
            Ok(proof) => Ok((ctx, proof)),
            Err(d) => {
                let message = ctx.denial_message(d);
                Err(ctx.refuse(Refusal::forbidden(message)).await)
            }
        }
    }

    /// Name the resource once it is known (e.g. from the body, or a new id).
    pub fn set_resource(&mut self, resource: String) {
        self.resource = resource;
    }

    /// The actor string for events.
    fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |p| p.actor().to_string())
    }

    /// The tenant of the caller, if tenant-scoped.
    fn tenant(&self) -> Option<TenantId> {
        self.principal.as_ref().and_then(|p| p.tenant_id().cloned())
    }

    /// A pending event for this request's action, outcome `allowed`: the services commit
    /// it with the change or read they make.
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

    /// Answer the handler's result: a success as is (its event is durable), a refusal
    /// with its audit event.
    pub async fn finish(self, result: Result<HttpResponse, Refusal>) -> Result<HttpResponse, ApiError> {
        match result {
            Ok(response) => Ok(response),
            Err(refusal) => Err(self.refuse(refusal).await),
        }
    }

    /// For answers that change nothing: record `event` durably, then answer.
    pub async fn record_and_answer(
        self,
        result: Result<(PendingEvent, HttpResponse), Refusal>,
    ) -> Result<HttpResponse, ApiError> {
        let result = match result {
            Ok((event, response)) => match self.state.store.record(event).await {
                Ok(_) => Ok(response),
                Err(e) => Err(Refusal::internal(e)),
            },
            Err(refusal) => Err(refusal),
        };
        self.finish(result).await
    }

    async fn authenticate(&mut self, req: &HttpRequest) -> Result<Principal, ApiError> {
        let header = req.headers().get("authorization").and_then(|v| v.to_str().ok());
        match authenticate(&self.state.store, &self.state.clock, header) {
            Ok(Ok(p)) => {
                self.principal = Some(p.clone());
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

    fn denial_message(&self, denial: Denial) -> String {
        match denial {
            Denial::MissingPermission(p) => format!("this token lacks the {} permission", p.as_str()),
            Denial::WrongKind => match self.principal.as_ref().and_then(|p| p.tenant_id()) {
                Some(_) => "this operation needs an operator token".to_owned(),
                None => "operator tokens cannot do this; use a tenant token".to_owned(),
            },
        }
    }

    /// The one place a refusal becomes an answer and (unless already recorded) an event.
    async fn refuse(&self, refusal: Refusal) -> ApiError {
        let rid = &self.request_id;
        let (err, outcome) = match refusal {
            Refusal::Recorded(err) => return err.with_request_id(rid),
            Refusal::RecordedInternal(cause) => {
                tracing::error!(request_id = %rid, error = %cause, "refused by the store");
                return ApiError::internal().with_request_id(rid);
            }
            Refusal::Denied(err) => (err, Outcome::Denied),
            Refusal::HiddenNotFound => (ApiError::not_found("not found"), Outcome::Denied),
            Refusal::Failed(err) => (err, Outcome::Failed),
            Refusal::Backend(cause) => {
                tracing::error!(request_id = %rid, error = %cause, "key hardware failure");
                (ApiError::backend_unavailable(), Outcome::Failed)
            }
            Refusal::Internal(cause) => {
                tracing::error!(request_id = %rid, error = %cause, "internal error");
                (ApiError::internal(), Outcome::Failed)
            }
        };
        let mut ev = self.event().detail("error", err.code.as_str());
        if outcome == Outcome::Denied {
            ev = ev.detail("attempted", action_name(self.action));
            ev.action = Action::AccessDenied;
        }
        ev.outcome = outcome;
        self.commit_refusal(ev, err).await
    }

    async fn commit_refusal(&self, ev: PendingEvent, err: ApiError) -> ApiError {
        if let Err(e) = self.state.store.record(ev).await {
            // No answer without its event: a refusal that cannot be audited is a 500.
            tracing::error!(request_id = %self.request_id, error = %e, "cannot record audit event");
            return ApiError::internal().with_request_id(&self.request_id);
        }
        err.with_request_id(&self.request_id)
    }
}

fn action_name(a: Action) -> String {
    serde_json::to_value(a)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}
