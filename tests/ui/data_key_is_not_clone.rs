// A DataKey cannot be copied out of its Arc / cache entry.
use strongroom::keys::DataKey;

fn main() {
    let key = DataKey::generate(&strongroom::random::Random::os());
    let _copy = key.clone();
}
