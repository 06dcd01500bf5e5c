// Authorized<TenantScope> is proof of an authorisation check: no constructor outside `auth`.
use strongroom::auth::{Authorized, Principal, TenantScope};

fn forge(principal: Principal, scope: TenantScope) -> Authorized<TenantScope> {
    Authorized { principal, scope }
}

fn main() {
    let _ = forge;
}
