// A DataKey cannot be printed.
use strongroom::keys::DataKey;

fn main() {
    let key = DataKey::generate();
    let _ = format!("{:?}", key);
}
