//! No plaintext at rest: record data never reaches the disk in the clear.

use std::path::Path;

use serde_json::json;

use crate::harness::{contains, files_under, random_hex, read_file, TestServer};

/// Every file under `dirs` that contains `needle`.
fn files_containing(dirs: &[&Path], needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for dir in dirs {
        for f in files_under(dir) {
            if contains(&read_file(&f), needle) {
                hits.push(f.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test]
async fn record_data_is_not_stored_in_the_clear() {
    let mut s = TestServer::start();
    s.create_tenant("acme").await;
    let token = s.tenant_token("acme", &["records:write", "records:read"]).await;

    let canary = random_hex(16); // 32 hex chars
    let key_canary = format!("k{}", random_hex(8));
    let record_id = format!("rid-{}", random_hex(8));
    let entity = format!("ent-{}", random_hex(8));
    let data = json!({ "secret": canary, key_canary.clone(): "value", "n": [canary.clone(), canary.clone()] });
    s.write_records(&token, &entity, json!([{ "id": record_id, "data": data }]))
        .await;
    // A second, larger record, so the data spans more than one small value.
    let big = format!("{canary}{}", "x".repeat(10_000));
    s.write_records(&token, &entity, json!([{ "id": "big", "data": { "blob": big } }]))
        .await;

    // The canary is really there through the API (so the scan below can fail).
    let r = s
        .get(&format!("/v1/entities/{entity}/records/{record_id}"), Some(&token))
        .await;
    r.expect(200);
    assert!(r.text.contains(&canary), "the API returns the data: {}", r.text);
    assert!(r.text.contains(&key_canary));
    let r = s.get(&format!("/v1/entities/{entity}/records"), Some(&token)).await;
    r.expect(200);
    assert!(r.text.contains(&canary));

    s.stop();

    let data_dir = s.data_dir().to_path_buf();
    let files = files_under(&data_dir);
    assert!(
        files.iter().any(|f| f.ends_with("data.mdb")),
        "LMDB data file present: {files:?}"
    );
    // The scan reads real content: ids are stored in the clear as keys, so they are found.
    assert!(
        !files_containing(&[&data_dir], record_id.as_bytes()).is_empty(),
        "the record id (a clear-text key) is found in the data dir, so the scan works"
    );
    assert!(!files_containing(&[&data_dir], entity.as_bytes()).is_empty());

    // The canary appears nowhere: not in the data dir, not in the rest of the test dir
    // (config, bootstrap token, server log), not in the HSM token or TPM state.
    let everywhere = [s.dir(), s.hsm_dir(), s.tpm_dir()];
    for needle in [canary.as_bytes(), key_canary.as_bytes()] {
        let hits = files_containing(&everywhere, needle);
        assert!(hits.is_empty(), "record data found in the clear in {hits:?}");
    }
    let token_file = read_file(&s.dir().join("bootstrap-token"));
    assert!(!contains(&token_file, canary.as_bytes()));
    // The tenant token itself is stored only as a hash.
    let hits = files_containing(&[&data_dir], token.as_bytes());
    assert!(hits.is_empty(), "a bearer token is stored in the clear in {hits:?}");
    let hits = files_containing(&[&data_dir], s.operator().as_bytes());
    assert!(
        hits.is_empty(),
        "the bootstrap token is stored in the clear in {hits:?}"
    );
}
