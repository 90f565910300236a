//! Account state: balances, nonces, votes, candidates and their vote totals,
//! and the rules that apply a transaction to it. No I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::codec::{Reader, Writer};
use crate::crypto::PublicKey;
use crate::error::{Error, Result, TxError};
use crate::genesis::Genesis;
use crate::tx::{Payload, Transaction};

/// One account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Units (1 HP = 10^8 units).
    pub balance: u64,
    /// The nonce its next transaction must carry.
    pub nonce: u64,
    /// Candidates it votes for; each receives the whole balance as weight.
    pub votes: Vec<PublicKey>,
}

/// A delegate candidate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub name: String,
    /// Registration order; breaks ties in votes (earlier wins).
    pub order: u64,
    /// Sum of the balances of the accounts voting for it, in units.
    pub votes: u64,
}

/// The ledger's state after some block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    pub accounts: BTreeMap<PublicKey, Account>,
    pub candidates: BTreeMap<PublicKey, Candidate>,
}

impl State {
    /// The state before block 1.
    pub fn from_genesis(g: &Genesis) -> Self {
        let mut s = State::default();
        for a in &g.allocations {
            s.accounts.entry(a.account).or_default().balance += Genesis::units(a.amount_hp);
        }
        for (i, c) in g.candidates.iter().enumerate() {
            s.candidates.insert(
                c.key,
                Candidate {
                    name: c.name.clone(),
                    order: i as u64,
                    votes: 0,
                },
            );
        }
        s
    }

    /// The balance of `k` in units (0 if unknown).
    pub fn balance(&self, k: &PublicKey) -> u64 {
        self.accounts.get(k).map_or(0, |a| a.balance)
    }

    /// The nonce `k`'s next transaction must carry.
    pub fn next_nonce(&self, k: &PublicKey) -> u64 {
        self.accounts.get(k).map_or(0, |a| a.nonce)
    }

    /// The top `n` candidates by votes (ties: registration order), sorted by
    /// key: this sorted list is the round's production order.
    pub fn elect(&self, n: usize) -> Vec<PublicKey> {
        let mut c: Vec<(&PublicKey, &Candidate)> = self.candidates.iter().collect();
        c.sort_by(|a, b| b.1.votes.cmp(&a.1.votes).then(a.1.order.cmp(&b.1.order)));
        let mut top: Vec<PublicKey> = c.into_iter().take(n).map(|(k, _)| *k).collect();
        top.sort();
        top
    }

    fn shift_votes(&mut self, voter: &[PublicKey], delta: i128) {
        for c in voter {
            if let Some(cand) = self.candidates.get_mut(c) {
                cand.votes = (cand.votes as i128 + delta).clamp(0, u64::MAX as i128) as u64;
            }
        }
    }

    /// What [`State::apply`] would refuse, without changing anything: the
    /// nonce, the balance, the candidates named. The signature and chain
    /// must already be checked (`Transaction::check_stateless`).
    pub fn check(&self, tx: &Transaction) -> Result<(), TxError> {
        let from = self.accounts.get(&tx.from);
        let expected = from.map_or(0, |a| a.nonce);
        if tx.nonce != expected {
            return Err(TxError::WrongNonce {
                account: tx.from,
                expected,
                got: tx.nonce,
            });
        }
        match &tx.payload {
            Payload::Transfer { to, amount } => {
                let balance = from.map_or(0, |a| a.balance);
                if balance < *amount {
                    return Err(TxError::InsufficientBalance {
                        account: tx.from,
                        balance,
                        needed: *amount,
                    });
                }
                if *to != tx.from && self.balance(to).checked_add(*amount).is_none() {
                    return Err(TxError::InvalidPayload(
                        "recipient balance would overflow".into(),
                    ));
                }
            }
            Payload::Vote { candidates } => {
                if let Some(c) = candidates.iter().find(|c| !self.candidates.contains_key(c)) {
                    return Err(TxError::UnknownCandidate(*c));
                }
            }
            Payload::RegisterCandidate { .. } if self.candidates.contains_key(&tx.from) => {
                return Err(TxError::InvalidPayload(format!(
                    "{} is already a candidate",
                    tx.from
                )));
            }
            Payload::RegisterCandidate { .. }
            | Payload::Audit(_)
            | Payload::Anchor(_)
            | Payload::Trace(_) => {}
        }
        Ok(())
    }

    /// Applies a transaction whose signature and chain were already checked
    /// (`Transaction::check_stateless`). Checks nonce, balance and candidates
    /// ([`State::check`]); on error the state is unchanged.
    pub fn apply(&mut self, tx: &Transaction) -> Result<(), TxError> {
        self.check(tx)?;
        let from = self.accounts.get(&tx.from).cloned().unwrap_or_default();
        match &tx.payload {
            Payload::Transfer { to, amount } => {
                let to_votes = self.accounts.get(to).map(|a| a.votes.clone());
                self.shift_votes(&from.votes, -(*amount as i128));
                self.shift_votes(&to_votes.unwrap_or_default(), *amount as i128);
                self.accounts.entry(tx.from).or_default().balance -= amount;
                self.accounts.entry(*to).or_default().balance += amount;
            }
            Payload::Vote { candidates } => {
                self.shift_votes(&from.votes, -(from.balance as i128));
                self.shift_votes(candidates, from.balance as i128);
                self.accounts.entry(tx.from).or_default().votes = candidates.clone();
            }
            Payload::RegisterCandidate { name } => {
                let order = self
                    .candidates
                    .values()
                    .map(|c| c.order + 1)
                    .max()
                    .unwrap_or(0);
                // Votes already cast for this key cannot exist: votes for
                // unknown candidates are rejected.
                self.candidates.insert(
                    tx.from,
                    Candidate {
                        name: name.clone(),
                        order,
                        votes: 0,
                    },
                );
            }
            Payload::Audit(_) | Payload::Anchor(_) | Payload::Trace(_) => {}
        }
        self.accounts.entry(tx.from).or_default().nonce += 1;
        Ok(())
    }
}

impl Account {
    /// Canonical encoding for storage: version u16 = 1, balance, nonce, votes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(1);
        w.u64(self.balance);
        w.u64(self.nonce);
        w.list(&self.votes, |w, k| w.raw(&k.0));
        w.into_bytes()
    }
    /// Decodes [`Account::encode`].
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "Account");
        let v = r.u16()?;
        if v != 1 {
            return Err(Error::decode("Account", format!("unknown version {v}")));
        }
        let a = Account {
            balance: r.u64()?,
            nonce: r.u64()?,
            votes: r.list(|r| Ok(PublicKey(r.array()?)))?,
        };
        r.finish()?;
        Ok(a)
    }
}

impl Candidate {
    /// Canonical encoding for storage: version u16 = 1, name, order, votes.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(1);
        w.str(&self.name);
        w.u64(self.order);
        w.u64(self.votes);
        w.into_bytes()
    }
    /// Decodes [`Candidate::encode`].
    pub fn decode(b: &[u8]) -> Result<Self> {
        let mut r = Reader::new(b, "Candidate");
        let v = r.u16()?;
        if v != 1 {
            return Err(Error::decode("Candidate", format!("unknown version {v}")));
        }
        let c = Candidate {
            name: r.string()?,
            order: r.u64()?,
            votes: r.u64()?,
        };
        r.finish()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Keypair;

    fn setup() -> (Genesis, State, Vec<Keypair>, Vec<Keypair>) {
        let (g, d, h) = Genesis::deterministic("t", 3, 1000, "s");
        let s = State::from_genesis(&g);
        (g, s, d, h)
    }

    #[test]
    fn votes_follow_balance_changes() {
        let (g, mut s, d, h) = setup();
        let chain = g.chain_hash();
        let voter = &h[0]; // team: 15M HP
        let c = d[2].public();
        s.apply(&Transaction::signed(
            chain,
            voter,
            0,
            Payload::Vote {
                candidates: vec![c],
            },
        ))
        .unwrap();
        assert_eq!(s.candidates[&c].votes, 15_000_000 * crate::tx::UNITS_PER_HP);
        let to = Keypair::from_seed(b"to").public();
        s.apply(&Transaction::signed(
            chain,
            voter,
            1,
            Payload::Transfer { to, amount: 1000 },
        ))
        .unwrap();
        assert_eq!(
            s.candidates[&c].votes,
            15_000_000 * crate::tx::UNITS_PER_HP - 1000
        );
        // withdrawing the vote removes exactly the current balance
        s.apply(&Transaction::signed(
            chain,
            voter,
            2,
            Payload::Vote { candidates: vec![] },
        ))
        .unwrap();
        assert_eq!(s.candidates[&c].votes, 0);
    }

    #[test]
    fn election_takes_top_stake_and_breaks_ties_by_order() {
        let (g, mut s, d, h) = setup();
        let chain = g.chain_hash();
        // no votes: the first 3 registered
        assert_eq!(s.elect(3), {
            let mut v: Vec<_> = d.iter().map(|k| k.public()).collect();
            v.sort();
            v
        });
        let newcomer = Keypair::from_seed(b"new");
        s.apply(&Transaction::signed(
            chain,
            &h[0],
            0,
            Payload::Transfer {
                to: newcomer.public(),
                amount: 1,
            },
        ))
        .unwrap();
        s.apply(&Transaction::signed(
            chain,
            &newcomer,
            0,
            Payload::RegisterCandidate { name: "new".into() },
        ))
        .unwrap();
        assert!(!s.elect(3).contains(&newcomer.public()));
        s.apply(&Transaction::signed(
            chain,
            &h[1],
            0,
            Payload::Vote {
                candidates: vec![newcomer.public()],
            },
        ))
        .unwrap();
        let e = s.elect(3);
        assert!(e.contains(&newcomer.public()));
        assert!(
            !e.contains(&d[2].public()),
            "the last registered lost its seat"
        );
    }

    #[test]
    fn invalid_transactions_leave_state_unchanged_with_named_errors() {
        let (g, mut s, _, h) = setup();
        let chain = g.chain_hash();
        let before = s.clone();
        let poor = Keypair::from_seed(b"poor");
        let e = s
            .apply(&Transaction::signed(
                chain,
                &poor,
                0,
                Payload::Transfer {
                    to: h[0].public(),
                    amount: 1,
                },
            ))
            .unwrap_err();
        assert!(matches!(
            e,
            TxError::InsufficientBalance {
                balance: 0,
                needed: 1,
                ..
            }
        ));
        let e = s
            .apply(&Transaction::signed(
                chain,
                &h[0],
                5,
                Payload::Transfer {
                    to: poor.public(),
                    amount: 1,
                },
            ))
            .unwrap_err();
        assert!(matches!(
            e,
            TxError::WrongNonce {
                expected: 0,
                got: 5,
                ..
            }
        ));
        let e = s
            .apply(&Transaction::signed(
                chain,
                &h[0],
                0,
                Payload::Vote {
                    candidates: vec![poor.public()],
                },
            ))
            .unwrap_err();
        assert_eq!(e, TxError::UnknownCandidate(poor.public()));
        assert_eq!(s, before);
    }

    #[test]
    fn account_and_candidate_encodings_round_trip() {
        let a = Account {
            balance: 5,
            nonce: 2,
            votes: vec![Keypair::from_seed(b"x").public()],
        };
        assert_eq!(Account::decode(&a.encode()).unwrap(), a);
        let c = Candidate {
            name: "n".into(),
            order: 1,
            votes: 9,
        };
        assert_eq!(Candidate::decode(&c.encode()).unwrap(), c);
    }
}
