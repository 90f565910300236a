//! Hashes that placement is built on.
//!
//! Every node must compute the same placement from the same map, so these
//! functions are fixed forever: changing a constant here moves every object
//! in every cluster. The golden vectors in `tests/golden.rs` catch that.

/// The splitmix64 / murmur3 finalizer: every input bit affects every output
/// bit with probability close to one half.
#[inline(always)]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const SEED_A: u64 = 0x6870_6368_6169_6e31; // "hpchain1"
const SEED_B: u64 = 0x9e37_79b9_7f4a_7c15;

/// A well-mixed 32-bit hash of three 32-bit words: (input, item, rank).
#[inline(always)]
pub fn hash3(a: u32, b: u32, c: u32) -> u32 {
    let first = mix64((u64::from(a) << 32 | u64::from(b)) ^ SEED_A);
    let second = mix64(first ^ u64::from(c).wrapping_mul(SEED_B) ^ SEED_B);
    (second >> 32) as u32
}

/// A well-mixed 32-bit hash of two 64-bit words.
#[inline(always)]
pub fn hash_u64_pair(a: u64, b: u64) -> u32 {
    let first = mix64(a ^ SEED_A);
    let second = mix64(first ^ b.wrapping_mul(SEED_B));
    (second >> 32) as u32
}

/// `x mod b`, stable as `b` grows (Ceph's `ceph_stable_mod`).
///
/// With `b` a power of two this is `x & (b - 1)`. For other `b` the values
/// that would land at or beyond `b` fold onto the lower half, so that when
/// `b` grows by one only the inputs of one bucket split, instead of nearly
/// all inputs moving as with a plain `x % b`.
#[inline]
pub fn stable_mod(x: u32, b: u32) -> u32 {
    assert!(b > 0, "stable_mod needs a positive modulus");
    let mask = b.next_power_of_two() - 1;
    if x & mask < b {
        x & mask
    } else {
        x & (mask >> 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_mod_matches_plain_modulo_for_powers_of_two() {
        for x in [0u32, 1, 7, 8, 1000, u32::MAX] {
            for b in [1u32, 2, 8, 64, 1 << 20] {
                assert_eq!(stable_mod(x, b), x % b);
            }
        }
    }

    #[test]
    fn stable_mod_growing_by_one_splits_only_one_bucket() {
        // Going from 12 to 13 buckets: an input either stays, or moves from
        // the bucket 13 - 1 - 8 = 4 (its "parent") to the new bucket 12.
        for x in 0..100_000u32 {
            let before = stable_mod(x, 12);
            let after = stable_mod(x, 13);
            if before != after {
                assert_eq!((before, after), (4, 12), "input {x}");
            }
        }
    }

    #[test]
    fn hash3_changes_about_half_the_bits_when_one_input_bit_flips() {
        let mut flipped = 0u64;
        let mut total = 0u64;
        for i in 0..2000u32 {
            let base = hash3(i, 7, 1);
            for bit in 0..32 {
                flipped += u64::from((base ^ hash3(i ^ (1 << bit), 7, 1)).count_ones());
                flipped += u64::from((base ^ hash3(i, 7 ^ (1 << bit), 1)).count_ones());
                flipped += u64::from((base ^ hash3(i, 7, 1 ^ (1 << bit))).count_ones());
                total += 3 * 32;
            }
        }
        let ratio = flipped as f64 / total as f64;
        assert!((ratio - 0.5).abs() < 0.01, "avalanche ratio {ratio}");
    }
}
