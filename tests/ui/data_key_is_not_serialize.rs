// A DataKey cannot be serialised (to a log, a response, the store).
use strongroom::keys::DataKey;

fn serializable<T: serde::Serialize>(_: &T) {}

fn main() {
    let key = DataKey::generate(&strongroom::random::Random::os());
    serializable(&key);
}
