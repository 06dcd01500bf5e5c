// A TenantScope can only come out of `auth` (Principal::tenant), never be built by hand.
use strongroom::auth::TenantScope;
use strongroom::domain::TenantId;

fn main() {
    let tenant = TenantId::parse("victim").unwrap();
    let _scope = TenantScope { tenant };
}
