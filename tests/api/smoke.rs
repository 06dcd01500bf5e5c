use crate::harness::TestServer;

#[tokio::test]
async fn smoke() {
    let t0 = std::time::Instant::now();
    let mut s = TestServer::start();
    eprintln!("started in {:?}", t0.elapsed());
    let r = s.get("/healthz", None).await;
    r.expect(200);
    s.create_tenant("acme").await;
    let tok = s.tenant_token("acme", &["records:write", "records:read"]).await;
    let ids = s.write_records(&tok, "e1", serde_json::json!([{"data": {"a": 1}}])).await;
    eprintln!("{ids:?}");
    let t1 = std::time::Instant::now();
    s.restart();
    eprintln!("restarted in {:?}", t1.elapsed());
    let r = s.get(&format!("/v1/entities/e1/records/{}", ids[0]), Some(&tok)).await;
    r.expect(200);
    eprintln!("{}", r.text);
    let evs = s.verified_audit_log();
    for e in &evs { eprintln!("{}", String::from_utf8_lossy(&e.bytes)); }
    let t2 = std::time::Instant::now();
    s.stop();
    eprintln!("stopped in {:?}", t2.elapsed());
}
