// A DataKey cannot be serialised (to a log, a response, the store).
use strongroom::keys::DataKey;

fn main() {
    let key = DataKey::generate();
    let _ = serde_json::to_vec(&key);
}
