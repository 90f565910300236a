//! The genesis file: chain id, supply allocation, delegate candidates, the
//! number of delegates and the slot time. JSON on disk.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codec::Writer;
use crate::crypto::{hash_domain, Hash32, Keypair, PublicKey};
use crate::error::{Error, Result};
use crate::tx::UNITS_PER_HP;

/// Total supply, in HP.
pub const TOTAL_SUPPLY_HP: u64 = 100_000_000;

/// The white paper's allocation: category and percent of the total supply.
pub const ALLOCATION_TABLE: [(&str, u64); 7] = [
    ("team", 15),
    ("community", 10),
    ("foundation", 10),
    ("technology-development", 20),
    ("ecological-development", 30),
    ("meetings", 5),
    ("market-value-management", 10),
];

fn default_slot_time_ms() -> u64 {
    1000
}
fn default_delegate_count() -> u32 {
    21
}

/// HP granted to an account at genesis, under one allocation category.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// One of the names in [`ALLOCATION_TABLE`].
    pub category: String,
    pub account: PublicKey,
    /// Whole HP.
    pub amount_hp: u64,
}

/// A delegate candidate known at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisCandidate {
    pub name: String,
    pub key: PublicKey,
}

/// The chain's genesis. Its hash identifies the chain in every transaction
/// and block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Genesis {
    pub chain_id: String,
    /// Start of slot 0, ms since the Unix epoch.
    pub genesis_time_ms: u64,
    #[serde(default = "default_slot_time_ms")]
    pub slot_time_ms: u64,
    /// N: number of active delegates (3 for a dev cluster, 21 by default).
    #[serde(default = "default_delegate_count")]
    pub delegate_count: u32,
    pub allocations: Vec<Allocation>,
    /// In registration order; ties in votes are broken by this order.
    pub candidates: Vec<GenesisCandidate>,
}

impl Genesis {
    /// Checks the allocation (every category present with exactly its share,
    /// nothing else, totalling 100,000,000 HP), the candidates (at least N,
    /// distinct keys) and the timing.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::Genesis(s));
        if self.chain_id.is_empty() || self.chain_id.len() > 64 {
            return bad("chain_id must be 1 to 64 bytes".into());
        }
        if self.slot_time_ms < 10 {
            return bad(format!("slot_time_ms {} is below 10 ms", self.slot_time_ms));
        }
        if self.delegate_count == 0 || self.delegate_count > 101 {
            return bad(format!(
                "delegate_count {} must be 1 to 101",
                self.delegate_count
            ));
        }
        let mut total: u64 = 0;
        for a in &self.allocations {
            if !ALLOCATION_TABLE.iter().any(|(c, _)| *c == a.category) {
                return bad(format!(
                    "unknown allocation category {:?}; the categories are {:?}",
                    a.category,
                    ALLOCATION_TABLE.iter().map(|c| c.0).collect::<Vec<_>>()
                ));
            }
            total = total
                .checked_add(a.amount_hp)
                .ok_or_else(|| Error::Genesis("allocations overflow".into()))?;
        }
        for (cat, pct) in ALLOCATION_TABLE {
            let want = TOTAL_SUPPLY_HP / 100 * pct;
            let got: u64 = self
                .allocations
                .iter()
                .filter(|a| a.category == cat)
                .map(|a| a.amount_hp)
                .sum();
            if got != want {
                return bad(format!(
                    "category {cat} holds {got} HP, the allocation table gives it {pct}% = {want} HP"
                ));
            }
        }
        if total != TOTAL_SUPPLY_HP {
            return bad(format!(
                "allocations total {total} HP, must be {TOTAL_SUPPLY_HP}"
            ));
        }
        if self.candidates.len() < self.delegate_count as usize {
            return bad(format!(
                "{} candidates for {} delegate seats; list at least as many candidates",
                self.candidates.len(),
                self.delegate_count
            ));
        }
        let mut keys: Vec<_> = self.candidates.iter().map(|c| c.key).collect();
        keys.sort();
        keys.dedup();
        if keys.len() != self.candidates.len() {
            return bad("a candidate key is listed twice".into());
        }
        Ok(())
    }

    /// Canonical encoding, hashed into the chain hash.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(1);
        w.str(&self.chain_id);
        w.u64(self.genesis_time_ms);
        w.u64(self.slot_time_ms);
        w.u32(self.delegate_count);
        w.list(&self.allocations, |w, a| {
            w.str(&a.category);
            w.raw(&a.account.0);
            w.u64(a.amount_hp);
        });
        w.list(&self.candidates, |w, c| {
            w.str(&c.name);
            w.raw(&c.key.0);
        });
        w.into_bytes()
    }

    /// The chain's identity: blake3("HPCHAIN/GENESIS/V1\0" || encoding). It is
    /// also the `prev_hash` of block 1.
    pub fn chain_hash(&self) -> Hash32 {
        hash_domain(b"HPCHAIN/GENESIS/V1\0", &self.encode())
    }

    /// Balance of an allocation in units.
    pub fn units(amount_hp: u64) -> u64 {
        amount_hp * UNITS_PER_HP
    }

    /// Parses and validates a JSON genesis.
    pub fn from_json(text: &str) -> Result<Self> {
        let g: Genesis = serde_json::from_str(text)
            .map_err(|e| Error::Genesis(format!("not valid JSON: {e}")))?;
        g.validate()?;
        Ok(g)
    }

    /// Reads and validates a genesis file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Genesis(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("genesis serializes")
    }

    /// A genesis for tests and simulations: `n` delegates and `n` candidates
    /// with keys derived from `seed` (not secret!), one account per category.
    /// Returns the genesis, the delegate keys and the allocation keys in
    /// [`ALLOCATION_TABLE`] order.
    pub fn deterministic(
        chain_id: &str,
        n: u32,
        slot_time_ms: u64,
        seed: &str,
    ) -> (Genesis, Vec<Keypair>, Vec<Keypair>) {
        let delegates: Vec<Keypair> = (0..n)
            .map(|i| Keypair::from_seed(format!("{seed}/delegate/{i}").as_bytes()))
            .collect();
        let holders: Vec<Keypair> = ALLOCATION_TABLE
            .iter()
            .map(|(c, _)| Keypair::from_seed(format!("{seed}/alloc/{c}").as_bytes()))
            .collect();
        let g = Self::assemble(chain_id, n, slot_time_ms, &delegates, &holders);
        (g, delegates, holders)
    }

    fn assemble(
        chain_id: &str,
        n: u32,
        slot_time_ms: u64,
        delegates: &[Keypair],
        holders: &[Keypair],
    ) -> Genesis {
        Genesis {
            chain_id: chain_id.into(),
            genesis_time_ms: 1_800_000_000_000,
            slot_time_ms,
            delegate_count: n,
            allocations: ALLOCATION_TABLE
                .iter()
                .zip(holders)
                .map(|((c, pct), k)| Allocation {
                    category: c.to_string(),
                    account: k.public(),
                    amount_hp: TOTAL_SUPPLY_HP / 100 * pct,
                })
                .collect(),
            candidates: delegates
                .iter()
                .enumerate()
                .map(|(i, k)| GenesisCandidate {
                    name: format!("delegate-{i}"),
                    key: k.public(),
                })
                .collect(),
        }
    }

    /// Writes a dev genesis with fresh random keys into `dir`:
    /// `genesis.json`, `delegate-<i>.key.json` for each of the `candidates`
    /// genesis candidates (one per dev node, whether or not it holds a seat)
    /// and `alloc-<category>.key.json` for each allocation account.
    /// `delegates` seats (at most `candidates`) go, while no votes are cast,
    /// to the first candidates: `State::elect` breaks ties by registration
    /// order, so candidates `delegates..candidates` start outside the set.
    pub fn write_dev(
        dir: &Path,
        chain_id: &str,
        candidates: u32,
        delegates: u32,
        genesis_time_ms: u64,
    ) -> Result<Genesis> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Genesis(format!("cannot create {}: {e}", dir.display())))?;
        let keys: Vec<Keypair> = (0..candidates).map(|_| Keypair::generate()).collect();
        let holders: Vec<Keypair> = ALLOCATION_TABLE
            .iter()
            .map(|_| Keypair::generate())
            .collect();
        let mut g = Self::assemble(chain_id, delegates, 1000, &keys, &holders);
        g.genesis_time_ms = genesis_time_ms;
        g.validate()?;
        for (i, k) in keys.iter().enumerate() {
            k.save(&dir.join(format!("delegate-{i}.key.json")))?;
        }
        for ((c, _), k) in ALLOCATION_TABLE.iter().zip(&holders) {
            k.save(&dir.join(format!("alloc-{c}.key.json")))?;
        }
        let p = dir.join("genesis.json");
        std::fs::write(&p, g.to_json())
            .map_err(|e| Error::Genesis(format!("cannot write {}: {e}", p.display())))?;
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_genesis_is_valid_and_totals_the_supply() {
        let (g, d, _) = Genesis::deterministic("t", 21, 1000, "s");
        g.validate().unwrap();
        assert_eq!(d.len(), 21);
        let total: u64 = g.allocations.iter().map(|a| a.amount_hp).sum();
        assert_eq!(total, 100_000_000);
        let team = g.allocations.iter().find(|a| a.category == "team").unwrap();
        assert_eq!(team.amount_hp, 15_000_000);
    }

    #[test]
    fn unbalanced_or_unknown_allocations_are_rejected() {
        let (g, _, _) = Genesis::deterministic("t", 3, 1000, "s");
        let mut m = g.clone();
        m.allocations[0].amount_hp += 1;
        let e = m.validate().unwrap_err().to_string();
        assert!(e.contains("team"), "{e}");
        let mut m = g.clone();
        m.allocations[1].category = "friends".into();
        assert!(m
            .validate()
            .unwrap_err()
            .to_string()
            .contains("unknown allocation category"));
        // moving HP between categories keeps the total but breaks the table
        let mut m = g.clone();
        m.allocations[0].amount_hp -= 5;
        m.allocations[1].amount_hp += 5;
        assert!(m.validate().is_err());
        let mut m = g.clone();
        m.candidates.pop();
        assert!(m.validate().unwrap_err().to_string().contains("candidates"));
    }

    #[test]
    fn a_category_may_be_split_across_accounts() {
        let (mut g, _, _) = Genesis::deterministic("t", 3, 1000, "s");
        let mut half = g.allocations[0].clone();
        half.amount_hp /= 2;
        g.allocations[0].amount_hp -= half.amount_hp;
        half.account = Keypair::from_seed(b"other").public();
        g.allocations.push(half);
        g.validate().unwrap();
    }

    #[test]
    fn dev_genesis_writes_loadable_files() {
        let dir = tempfile::tempdir().unwrap();
        let g = Genesis::write_dev(dir.path(), "dev", 3, 3, 5).unwrap();
        let back = Genesis::load(&dir.path().join("genesis.json")).unwrap();
        assert_eq!(back, g);
        assert_eq!(back.delegate_count, 3);
        let k = Keypair::load(&dir.path().join("delegate-2.key.json")).unwrap();
        assert_eq!(k.public(), g.candidates[2].key);
        assert_ne!(
            g.chain_hash(),
            Genesis::deterministic("dev", 3, 1000, "s").0.chain_hash()
        );
    }

    #[test]
    fn dev_genesis_with_fewer_seats_leaves_the_last_candidates_outside() {
        let dir = tempfile::tempdir().unwrap();
        let g = Genesis::write_dev(dir.path(), "dev", 4, 3, 5).unwrap();
        assert_eq!((g.candidates.len(), g.delegate_count), (4, 3));
        let outside = Keypair::load(&dir.path().join("delegate-3.key.json")).unwrap();
        let elected = crate::state::State::from_genesis(&g).elect(3);
        assert!(
            !elected.contains(&outside.public()),
            "ties go to the earlier"
        );
        assert!(g.candidates[..3].iter().all(|c| elected.contains(&c.key)));
        let e = Genesis::write_dev(dir.path(), "dev", 2, 3, 5).unwrap_err();
        assert!(
            e.to_string().contains("2 candidates for 3 delegate seats"),
            "{e}"
        );
    }

    #[test]
    fn defaults_apply_when_omitted() {
        let (g, _, _) = Genesis::deterministic("t", 21, 1000, "s");
        let mut v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
        v.as_object_mut().unwrap().remove("slot_time_ms");
        v.as_object_mut().unwrap().remove("delegate_count");
        let back = Genesis::from_json(&v.to_string()).unwrap();
        assert_eq!(back.slot_time_ms, 1000);
        assert_eq!(back.delegate_count, 21);
    }
}
