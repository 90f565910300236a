//! A deterministic natural logarithm for straw2 draws.
//!
//! `f64::ln` calls the platform's libm, whose last bit may differ between
//! libc versions and CPUs; two nodes that disagree in the last bit of a draw
//! could disagree on a winner. This version uses only IEEE-754 addition,
//! multiplication and division (exactly rounded everywhere) on tables built
//! at compile time, so every node computes the same bits.

const TABLE_BITS: u32 = 10;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const LN2: f64 = std::f64::consts::LN_2;

/// ln(m) for m in [1, 2) by the atanh series, in const context.
const fn ln_series(m: f64) -> f64 {
    let s = (m - 1.0) / (m + 1.0); // s <= 1/3
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 0;
    while k < 40 {
        sum += term / (2 * k + 1) as f64;
        term *= s2;
        k += 1;
    }
    2.0 * sum
}

const fn build_tables() -> ([f64; TABLE_SIZE], [f64; TABLE_SIZE]) {
    let mut ln_m0 = [0.0; TABLE_SIZE];
    let mut inv_m0 = [0.0; TABLE_SIZE];
    let mut i = 0;
    while i < TABLE_SIZE {
        let m0 = 1.0 + i as f64 / TABLE_SIZE as f64;
        ln_m0[i] = ln_series(m0);
        inv_m0[i] = 1.0 / m0;
        i += 1;
    }
    (ln_m0, inv_m0)
}

static TABLES: ([f64; TABLE_SIZE], [f64; TABLE_SIZE]) = build_tables();

/// ln((h + 1) / 2^32): the log of a uniform draw in (0, 1], never -inf.
#[inline(always)]
pub fn ln_unit(h: u32) -> f64 {
    let v = (u64::from(h) + 1) as f64; // exact: fits in 53 bits
    let bits = v.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let fraction = bits & ((1u64 << 52) - 1);
    let index = (fraction >> (52 - TABLE_BITS)) as usize;
    let m = f64::from_bits(fraction | (1023u64 << 52));
    let m0 = 1.0 + index as f64 / TABLE_SIZE as f64;
    let t = (m - m0) * TABLES.1[index]; // 0 <= t < 2^-10
                                        // ln(1 + t) to four terms: error below t^5 / 5 < 2e-16.
    let t2 = t * t;
    let ln_1pt = t - t2 * 0.5 + t2 * t * (1.0 / 3.0) - t2 * t2 * 0.25;
    (exponent - 32) as f64 * LN2 + TABLES.0[index] + ln_1pt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_unit_agrees_with_libm_within_1e13_absolute() {
        let mut h: u32 = 1;
        for _ in 0..200_000 {
            h = h.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let expected = ((f64::from(h) + 1.0) / 4_294_967_296.0).ln();
            let got = ln_unit(h);
            assert!(
                // Absolute: neighbouring inputs differ by at least 2e-10.
                (got - expected).abs() <= 1e-13,
                "h={h} got={got} expected={expected}"
            );
        }
    }

    #[test]
    fn ln_unit_is_monotone_and_bounded() {
        assert_eq!(ln_unit(u32::MAX), 0.0);
        assert!((ln_unit(0) - (-32.0 * LN2)).abs() < 1e-12);
        let mut previous = f64::NEG_INFINITY;
        for h in (0..u32::MAX).step_by(65_521) {
            let v = ln_unit(h);
            assert!(v > previous, "not increasing at {h}");
            previous = v;
        }
    }
}
