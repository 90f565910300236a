//! blake3 Merkle tree over transaction hashes, with inclusion proofs.
//!
//! leaf = blake3(0x00 || item), inner = blake3(0x01 || left || right): the
//! prefixes keep a leaf from being passed off as an inner node. At a level with
//! an odd count the last node is promoted unchanged to the next level (it is
//! never paired with itself, which would let two different lists share a root,
//! as in Bitcoin's CVE-2012-2459). The root of an empty list is
//! blake3("HPCHAIN/MERKLE/EMPTY").

use serde::{Deserialize, Serialize};

use crate::crypto::Hash32;

fn leaf(item: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[0u8]);
    h.update(&item.0);
    Hash32(*h.finalize().as_bytes())
}

fn inner(l: &Hash32, r: &Hash32) -> Hash32 {
    let mut h = blake3::Hasher::new();
    h.update(&[1u8]);
    h.update(&l.0);
    h.update(&r.0);
    Hash32(*h.finalize().as_bytes())
}

/// The root of an empty tree.
pub fn empty_root() -> Hash32 {
    crate::crypto::hash_domain(b"HPCHAIN/MERKLE/EMPTY", &[])
}

fn next_level(level: &[Hash32]) -> Vec<Hash32> {
    level
        .chunks(2)
        .map(|c| {
            if c.len() == 2 {
                inner(&c[0], &c[1])
            } else {
                c[0]
            }
        })
        .collect()
}

/// The Merkle root of `items` (in order).
pub fn root(items: &[Hash32]) -> Hash32 {
    if items.is_empty() {
        return empty_root();
    }
    let mut level: Vec<Hash32> = items.iter().map(leaf).collect();
    while level.len() > 1 {
        level = next_level(&level);
    }
    level[0]
}

/// The same root as [`root`], built one item at a time in O(log n)
/// memory: it keeps the roots of the perfect subtrees seen so far, and at
/// the end folds them from the right, which is what promoting the odd node
/// at each level amounts to.
#[derive(Default)]
pub struct MerkleBuilder {
    /// (height, root) of perfect subtrees, tallest first.
    stack: Vec<(u32, Hash32)>,
    count: u64,
}

impl MerkleBuilder {
    pub fn push(&mut self, item: &Hash32) {
        let mut node = (0u32, leaf(item));
        while let Some(&(height, top)) = self.stack.last() {
            if height != node.0 {
                break;
            }
            self.stack.pop();
            node = (height + 1, inner(&top, &node.1));
        }
        self.stack.push(node);
        self.count += 1;
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn root(&self) -> Hash32 {
        let mut nodes = self.stack.iter().rev().map(|(_, h)| *h);
        let Some(mut acc) = nodes.next() else {
            return empty_root();
        };
        for left in nodes {
            acc = inner(&left, &acc);
        }
        acc
    }
}

/// Bytes per leaf of a content digest.
pub const CONTENT_BLOCK: usize = 4096;

/// The content digest of an image (a snapshot, or a file exported from
/// one): the Merkle root over the blake3 of each 4 KiB block, the last one
/// possibly shorter. Feed it bytes in any chunking; the result is the same.
#[derive(Default)]
pub struct ContentDigest {
    tree: MerkleBuilder,
    partial: Vec<u8>,
    bytes: u64,
}

impl ContentDigest {
    pub fn update(&mut self, mut data: &[u8]) {
        self.bytes += data.len() as u64;
        if !self.partial.is_empty() {
            let take = (CONTENT_BLOCK - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == CONTENT_BLOCK {
                let block = std::mem::take(&mut self.partial);
                self.push_block(&block);
            }
        }
        let mut blocks = data.chunks_exact(CONTENT_BLOCK);
        for block in &mut blocks {
            self.push_block(block);
        }
        self.partial.extend_from_slice(blocks.remainder());
    }

    fn push_block(&mut self, block: &[u8]) {
        self.tree
            .push(&crate::crypto::hash_domain(b"HPCHAIN/CONTENT/4K", block));
    }

    /// (root, bytes hashed).
    pub fn finish(mut self) -> (Hash32, u64) {
        if !self.partial.is_empty() {
            let block = std::mem::take(&mut self.partial);
            self.push_block(&block);
        }
        (self.tree.root(), self.bytes)
    }
}

/// Proof that the item at `index` is in a tree of `leaf_count` items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerkleProof {
    /// Position of the item, from 0.
    pub index: u32,
    /// Number of items in the tree.
    pub leaf_count: u32,
    /// Sibling hashes from the leaf level up; levels where the node was
    /// promoted (no sibling) contribute nothing.
    pub siblings: Vec<Hash32>,
}

/// The inclusion proof of `items[index]`, or `None` if out of range.
pub fn prove(items: &[Hash32], index: usize) -> Option<MerkleProof> {
    if index >= items.len() {
        return None;
    }
    let mut level: Vec<Hash32> = items.iter().map(leaf).collect();
    let mut i = index;
    let mut siblings = Vec::new();
    while level.len() > 1 {
        let sib = i ^ 1;
        if sib < level.len() {
            siblings.push(level[sib]);
        }
        level = next_level(&level);
        i /= 2;
    }
    Some(MerkleProof {
        index: index as u32,
        leaf_count: items.len() as u32,
        siblings,
    })
}

impl MerkleProof {
    /// The root this proof yields for `item`, or `None` if the proof is
    /// malformed (index out of range, wrong number of siblings).
    pub fn compute_root(&self, item: &Hash32) -> Option<Hash32> {
        if self.index >= self.leaf_count {
            return None;
        }
        let mut h = leaf(item);
        let (mut i, mut n) = (self.index as usize, self.leaf_count as usize);
        let mut sib = self.siblings.iter();
        while n > 1 {
            if i % 2 == 1 {
                h = inner(sib.next()?, &h);
            } else if i + 1 < n {
                h = inner(&h, sib.next()?);
            } // else: last node of an odd level, promoted unchanged
            i /= 2;
            n = n.div_ceil(2);
        }
        if sib.next().is_some() {
            return None;
        }
        Some(h)
    }

    /// True if `item` is at `self.index` in the tree with root `root`.
    pub fn verify(&self, item: &Hash32, root: &Hash32) -> bool {
        self.compute_root(item).as_ref() == Some(root)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_streaming_builder_gives_the_same_root_for_every_count() {
        for n in 0..70u8 {
            let items: Vec<Hash32> = (0..n).map(|i| crate::crypto::hash(&[i])).collect();
            let mut builder = MerkleBuilder::default();
            for item in &items {
                builder.push(item);
            }
            assert_eq!(builder.root(), root(&items), "{n} items");
        }
    }

    #[test]
    fn a_content_digest_ignores_chunking_and_sees_every_byte() {
        let data: Vec<u8> = (0..(3 * CONTENT_BLOCK + 1000))
            .map(|i| (i * 7) as u8)
            .collect();
        let mut whole = ContentDigest::default();
        whole.update(&data);
        let (expected, bytes) = whole.finish();
        assert_eq!(bytes, data.len() as u64);
        let mut pieces = ContentDigest::default();
        for chunk in data.chunks(777) {
            pieces.update(chunk);
        }
        assert_eq!(pieces.finish().0, expected);
        let mut changed = data.clone();
        changed[2 * CONTENT_BLOCK + 5] ^= 1;
        let mut other = ContentDigest::default();
        other.update(&changed);
        assert_ne!(other.finish().0, expected);
    }

    use super::*;
    use crate::crypto::hash;

    /// Independent recursive definition: split at the largest power of two
    /// below n would be RFC 6962; ours pairs left to right and promotes the
    /// odd tail, which this recomputes level by level with explicit indices.
    fn naive_root(items: &[Hash32]) -> Hash32 {
        if items.is_empty() {
            return empty_root();
        }
        let mut level: Vec<Hash32> = items.iter().map(leaf).collect();
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut k = 0;
            while k < level.len() {
                if k + 1 < level.len() {
                    let mut b = vec![1u8];
                    b.extend_from_slice(&level[k].0);
                    b.extend_from_slice(&level[k + 1].0);
                    next.push(hash(&b));
                } else {
                    next.push(level[k]);
                }
                k += 2;
            }
            level = next;
        }
        level[0]
    }

    fn items(n: usize) -> Vec<Hash32> {
        (0..n).map(|i| hash(&(i as u64).to_le_bytes())).collect()
    }

    #[test]
    fn root_matches_naive_recomputation_for_all_small_counts() {
        for n in 0..=70 {
            let it = items(n);
            assert_eq!(root(&it), naive_root(&it), "n = {n}");
        }
        // the leaf prefix matters: a one-item tree is not the item itself
        let one = items(1);
        assert_ne!(root(&one), one[0]);
        assert_eq!(
            root(&one).0,
            *blake3::hash(&[&[0u8][..], &one[0].0].concat()).as_bytes()
        );
    }

    #[test]
    fn every_proof_verifies_and_fails_for_other_items_or_positions() {
        for n in 1..=40 {
            let it = items(n);
            let r = root(&it);
            for i in 0..n {
                let p = prove(&it, i).unwrap();
                assert!(p.verify(&it[i], &r), "n={n} i={i}");
                let other = hash(b"not in the tree");
                assert!(!p.verify(&other, &r));
                if n > 1 {
                    let mut moved = p.clone();
                    moved.index = ((i + 1) % n) as u32;
                    assert!(!moved.verify(&it[i], &r), "n={n} i={i} moved");
                }
            }
        }
    }

    #[test]
    fn odd_tail_is_not_duplicated() {
        // With duplication, [a,b,c] and [a,b,c,c] would share a root.
        let it = items(3);
        let mut dup = it.clone();
        dup.push(it[2]);
        assert_ne!(root(&it), root(&dup));
    }

    #[test]
    fn inner_node_cannot_pose_as_a_leaf() {
        let it = items(2);
        let inner_node = inner(&leaf(&it[0]), &leaf(&it[1]));
        // A one-leaf tree over the inner hash does not equal the two-leaf root.
        assert_ne!(root(&[inner_node]), root(&it));
    }

    #[test]
    fn malformed_proofs_are_rejected() {
        let it = items(5);
        let r = root(&it);
        let mut p = prove(&it, 2).unwrap();
        p.siblings.push(Hash32::ZERO);
        assert!(!p.verify(&it[2], &r));
        let mut p = prove(&it, 2).unwrap();
        p.siblings.pop();
        assert!(!p.verify(&it[2], &r));
        let mut p = prove(&it, 2).unwrap();
        p.index = 9;
        assert!(!p.verify(&it[2], &r));
        assert!(prove(&it, 5).is_none());
    }
}
