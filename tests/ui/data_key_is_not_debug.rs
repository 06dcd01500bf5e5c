// A DataKey cannot be printed.
use strongroom::keys::DataKey;

fn main() {
    let key = DataKey::generate(&strongroom::random::Random::os());
    let _ = format!("{:?}", key);
}
