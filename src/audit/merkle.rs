//! RFC 6962 Merkle tree over the events' chain hashes (which are already RFC 6962 leaf
//! hashes: `SHA-256(0x00 || event bytes)`).
//!
//! [`Frontier`] is the compact range of a tree of `size` leaves: the roots of the perfect
//! subtrees of the binary decomposition of `size`, left to right. Appending is O(1)
//! amortised and the root is O(log n), so the verifier and the sealer never rebuild the
//! tree.

use sha2::{Digest, Sha256};

use super::ChainHash;

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &ChainHash, right: &ChainHash) -> ChainHash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The compact range of a growing tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, hash), heights strictly decreasing.
    nodes: Vec<(u32, ChainHash)>,
}

impl Frontier {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append a leaf hash.
    pub fn push(&mut self, leaf: ChainHash) {
        let mut node = (0u32, leaf);
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    /// The RFC 6962 root (`SHA-256("")` for the empty tree).
    pub fn root(&self) -> ChainHash {
        let mut iter = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return Sha256::digest([]).into();
        };
        for (_, left) in iter {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// Root of a list of leaf hashes.
pub fn root_of(leaves: &[ChainHash]) -> ChainHash {
    let mut f = Frontier::new();
    for l in leaves {
        f.push(*l);
    }
    f.root()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn leaf(data: &[u8]) -> ChainHash {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(data);
        h.finalize().into()
    }

    /// Reference implementation straight from RFC 6962 §2.1 (recursive split).
    fn mth(leaves: &[ChainHash]) -> ChainHash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => leaves[0],
            n => {
                // k = the largest power of two smaller than n.
                let mut k = 1;
                while k * 2 < n {
                    k *= 2;
                }
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    /// The test vectors of RFC 6962's reference tests (certificate-transparency-go
    /// `merkle` tests): leaves and the roots of each prefix.
    #[test]
    fn rfc6962_test_vectors() {
        let inputs: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let leaves: Vec<ChainHash> = inputs.iter().map(|d| leaf(d)).collect();
        let mut f = Frontier::new();
        assert_eq!(
            hex::encode(f.root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(hex::encode(f.root()), roots[i], "root of the first {} leaves", i + 1);
            assert_eq!(f.root(), mth(&leaves[..=i]));
        }
    }

    #[test]
    fn frontier_matches_the_recursive_definition() {
        let leaves: Vec<ChainHash> = (0u32..300).map(|i| leaf(&i.to_be_bytes())).collect();
        let mut f = Frontier::new();
        for (i, l) in leaves.iter().enumerate() {
            f.push(*l);
            assert_eq!(f.root(), mth(&leaves[..=i]), "size {}", i + 1);
        }
    }
}
