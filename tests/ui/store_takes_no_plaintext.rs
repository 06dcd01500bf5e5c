// The store only accepts Sealed record data: Plaintext does not fit.
use strongroom::domain::RecordId;
use strongroom::keys::Plaintext;
use strongroom::store::NewRecord;

fn main() {
    let _record = NewRecord {
        id: RecordId::parse("r1").unwrap(),
        ts_nanos: 0,
        sealed: Plaintext::new(b"{\"secret\":1}".to_vec()),
    };
}
