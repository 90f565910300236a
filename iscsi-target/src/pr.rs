//! Reservations: SPC-2 RESERVE(6)/RELEASE(6) and SPC-4 persistent
//! reservations (PERSISTENT RESERVE IN/OUT), the way clustered hypervisors
//! fence each other (Windows failover clustering, VMware, pacemaker).
//!
//! Registrations are kept per I_T nexus (initiator port name); they do not
//! survive a target restart (APTPL is not supported and says so in REPORT
//! CAPABILITIES).

use crate::sense::Sense;
use std::collections::BTreeMap;

pub mod kind {
    pub const WRITE_EXCLUSIVE: u8 = 1;
    pub const EXCLUSIVE_ACCESS: u8 = 3;
    pub const WRITE_EXCLUSIVE_REGISTRANTS_ONLY: u8 = 5;
    pub const EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: u8 = 6;
    pub const WRITE_EXCLUSIVE_ALL_REGISTRANTS: u8 = 7;
    pub const EXCLUSIVE_ACCESS_ALL_REGISTRANTS: u8 = 8;
}

fn valid_type(t: u8) -> bool {
    matches!(t, 1 | 3 | 5 | 6 | 7 | 8)
}

fn all_registrants(t: u8) -> bool {
    matches!(t, 7 | 8)
}

/// How a command touches the medium, for conflict checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    /// Commands that never conflict (INQUIRY, REPORT LUNS, ...).
    None,
}

#[derive(Debug, Default)]
pub struct Reservations {
    /// SPC-2 RESERVE(6) holder.
    pub legacy_holder: Option<String>,
    pub generation: u32,
    /// nexus -> reservation key
    pub registrations: BTreeMap<String, u64>,
    /// (holder nexus, type); for all-registrants types the holder is any
    /// registrant, and the nexus recorded is the one that reserved.
    pub persistent: Option<(String, u8)>,
}

/// What a PERSISTENT RESERVE OUT did besides succeeding: unit attentions to
/// raise for other nexuses.
pub enum PrOutcome {
    Done,
    /// Raise `Sense` for these nexuses.
    Notify(Vec<String>, Sense),
}

/// A PROUT failure: either a reservation conflict or a check condition.
#[derive(Debug, PartialEq, Eq)]
pub enum PrError {
    Conflict,
    Check(Sense),
}

impl Reservations {
    fn is_holder(&self, nexus: &str) -> bool {
        match &self.persistent {
            Some((holder, t)) => {
                if all_registrants(*t) {
                    self.registrations.contains_key(nexus)
                } else {
                    holder == nexus
                }
            }
            None => false,
        }
    }

    /// Whether `nexus` may run a command with this access now.
    /// `legacy_exempt` commands (INQUIRY, REPORT LUNS, ...) run despite
    /// another nexus's SPC-2 reservation.
    pub fn allows(&self, nexus: &str, access: Access, legacy_exempt: bool) -> bool {
        if let Some(holder) = &self.legacy_holder {
            if holder != nexus && !legacy_exempt {
                return false;
            }
        }
        if access == Access::None {
            return true;
        }
        let Some((_, t)) = &self.persistent else {
            return true;
        };
        if self.is_holder(nexus) {
            return true;
        }
        let registered = self.registrations.contains_key(nexus);
        match *t {
            kind::WRITE_EXCLUSIVE => access == Access::Read,
            kind::EXCLUSIVE_ACCESS => false,
            kind::WRITE_EXCLUSIVE_REGISTRANTS_ONLY | kind::WRITE_EXCLUSIVE_ALL_REGISTRANTS => {
                access == Access::Read || registered
            }
            _ => registered,
        }
    }

    /// RESERVE(6).
    pub fn reserve_legacy(&mut self, nexus: &str) -> bool {
        if self.persistent.is_some() && !self.is_holder(nexus) {
            return false;
        }
        match &self.legacy_holder {
            Some(holder) if holder != nexus => false,
            _ => {
                self.legacy_holder = Some(nexus.to_string());
                true
            }
        }
    }

    /// RELEASE(6): only the holder's release does anything.
    pub fn release_legacy(&mut self, nexus: &str) {
        if self.legacy_holder.as_deref() == Some(nexus) {
            self.legacy_holder = None;
        }
    }

    /// An I_T nexus went away (logout, connection loss): its SPC-2
    /// reservation goes with it; persistent ones stay (that is the point).
    pub fn nexus_lost(&mut self, nexus: &str) {
        self.release_legacy(nexus);
    }

    /// PERSISTENT RESERVE IN.
    pub fn read(&self, service_action: u8) -> Result<Vec<u8>, Sense> {
        let mut out = self.generation.to_be_bytes().to_vec();
        match service_action {
            0 => {
                // READ KEYS
                let keys: Vec<u64> = self.registrations.values().copied().collect();
                out.extend_from_slice(&((keys.len() * 8) as u32).to_be_bytes());
                for k in keys {
                    out.extend_from_slice(&k.to_be_bytes());
                }
            }
            1 => {
                // READ RESERVATION
                match &self.persistent {
                    Some((holder, t)) => {
                        out.extend_from_slice(&16u32.to_be_bytes());
                        let key = if all_registrants(*t) {
                            0
                        } else {
                            self.registrations.get(holder).copied().unwrap_or(0)
                        };
                        out.extend_from_slice(&key.to_be_bytes());
                        out.extend_from_slice(&[0, 0, 0, 0, 0, *t & 0x0f, 0, 0]);
                    }
                    None => out.extend_from_slice(&0u32.to_be_bytes()),
                }
            }
            2 => {
                // REPORT CAPABILITIES: length 8, no PTPL, TMV with the
                // type mask below.
                out = vec![0, 8, 0x00, 0x80, 0xea, 0x01, 0, 0];
            }
            3 => {
                // READ FULL STATUS: one descriptor per registration, with
                // the initiator port's iSCSI TransportID.
                let mut descriptors = Vec::new();
                for (nexus, key) in &self.registrations {
                    descriptors.extend_from_slice(&key.to_be_bytes());
                    descriptors.extend_from_slice(&[0; 4]);
                    let (holder, scope_type) = match &self.persistent {
                        Some((_, t)) if self.is_holder(nexus) => (0x01, *t & 0x0f),
                        _ => (0, 0),
                    };
                    descriptors.extend_from_slice(&[holder, scope_type, 0, 0, 0, 0]);
                    descriptors.extend_from_slice(&1u16.to_be_bytes());
                    let mut name = nexus.as_bytes().to_vec();
                    name.push(0);
                    while !name.len().is_multiple_of(4) {
                        name.push(0);
                    }
                    let mut transport_id = vec![0x45, 0];
                    transport_id.extend_from_slice(&(name.len() as u16).to_be_bytes());
                    transport_id.extend_from_slice(&name);
                    descriptors.extend_from_slice(&(transport_id.len() as u32).to_be_bytes());
                    descriptors.extend_from_slice(&transport_id);
                }
                out.extend_from_slice(&(descriptors.len() as u32).to_be_bytes());
                out.extend_from_slice(&descriptors);
            }
            _ => {
                return Err(Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(4)));
            }
        }
        Ok(out)
    }

    /// PERSISTENT RESERVE OUT with its 24-byte parameter list.
    pub fn out(
        &mut self,
        nexus: &str,
        service_action: u8,
        scope_type: u8,
        params: &[u8],
    ) -> Result<PrOutcome, PrError> {
        if params.len() != 24 {
            return Err(PrError::Check(Sense::PARAMETER_LIST_LENGTH_ERROR));
        }
        let key = u64::from_be_bytes(params[0..8].try_into().unwrap());
        let sa_key = u64::from_be_bytes(params[8..16].try_into().unwrap());
        let flags = params[20];
        if flags & 0x01 != 0 {
            // APTPL: persistence through power loss is not offered.
            return Err(PrError::Check(
                Sense::INVALID_FIELD_IN_PARAMETER_LIST.at_parameter(20),
            ));
        }
        if flags & 0x0c != 0 {
            // SPEC_I_PT / ALL_TG_PT are not supported.
            return Err(PrError::Check(
                Sense::INVALID_FIELD_IN_PARAMETER_LIST.at_parameter(20),
            ));
        }
        let registered = self.registrations.get(nexus).copied();
        let pr_type = scope_type & 0x0f;
        match service_action {
            0 | 6 => {
                // REGISTER / REGISTER AND IGNORE EXISTING KEY
                let ignore = service_action == 6;
                match registered {
                    None => {
                        if !ignore && key != 0 {
                            return Err(PrError::Conflict);
                        }
                        if sa_key != 0 {
                            self.registrations.insert(nexus.to_string(), sa_key);
                        }
                    }
                    Some(current) => {
                        if !ignore && key != current {
                            return Err(PrError::Conflict);
                        }
                        if sa_key == 0 {
                            self.unregister(nexus);
                        } else {
                            self.registrations.insert(nexus.to_string(), sa_key);
                        }
                    }
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(PrOutcome::Done)
            }
            1 => {
                // RESERVE
                if registered != Some(key) || registered.is_none() {
                    return Err(PrError::Conflict);
                }
                if !valid_type(pr_type) || scope_type >> 4 != 0 {
                    return Err(PrError::Check(Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None)));
                }
                match &self.persistent {
                    None => {
                        self.persistent = Some((nexus.to_string(), pr_type));
                        Ok(PrOutcome::Done)
                    }
                    Some((_, t)) if self.is_holder(nexus) && *t == pr_type => Ok(PrOutcome::Done),
                    _ => Err(PrError::Conflict),
                }
            }
            2 => {
                // RELEASE
                if registered != Some(key) || registered.is_none() {
                    return Err(PrError::Conflict);
                }
                let Some((_, t)) = self.persistent.clone() else {
                    return Ok(PrOutcome::Done);
                };
                if !self.is_holder(nexus) {
                    return Ok(PrOutcome::Done);
                }
                if t != pr_type {
                    return Err(PrError::Check(Sense::INVALID_RELEASE_OF_PR));
                }
                self.persistent = None;
                if matches!(t, kind::WRITE_EXCLUSIVE | kind::EXCLUSIVE_ACCESS) {
                    return Ok(PrOutcome::Done);
                }
                let others = self.other_registrants(nexus);
                Ok(PrOutcome::Notify(others, Sense::RESERVATIONS_RELEASED))
            }
            3 => {
                // CLEAR
                if registered != Some(key) || registered.is_none() {
                    return Err(PrError::Conflict);
                }
                let others = self.other_registrants(nexus);
                self.registrations.clear();
                self.persistent = None;
                self.generation = self.generation.wrapping_add(1);
                Ok(PrOutcome::Notify(others, Sense::RESERVATIONS_PREEMPTED))
            }
            4 | 5 => {
                // PREEMPT / PREEMPT AND ABORT
                if registered != Some(key) || registered.is_none() {
                    return Err(PrError::Conflict);
                }
                let preempted: Vec<String>;
                match self.persistent.clone() {
                    Some((_, t)) if all_registrants(t) && sa_key == 0 => {
                        preempted = self.other_registrants(nexus);
                        for n in &preempted {
                            self.registrations.remove(n);
                        }
                        if !valid_type(pr_type) {
                            return Err(PrError::Check(
                                Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None),
                            ));
                        }
                        self.persistent = Some((nexus.to_string(), pr_type));
                    }
                    Some((holder, t))
                        if !all_registrants(t)
                            && self.registrations.get(&holder) == Some(&sa_key) =>
                    {
                        if !valid_type(pr_type) {
                            return Err(PrError::Check(
                                Sense::INVALID_FIELD_IN_CDB.at_cdb(2, None),
                            ));
                        }
                        preempted = self.with_key_except(sa_key, nexus);
                        for n in &preempted {
                            self.registrations.remove(n);
                        }
                        self.persistent = Some((nexus.to_string(), pr_type));
                    }
                    _ => {
                        if sa_key == 0 {
                            return Err(PrError::Check(
                                Sense::INVALID_FIELD_IN_PARAMETER_LIST.at_parameter(8),
                            ));
                        }
                        preempted = self.with_key_except(sa_key, nexus);
                        if preempted.is_empty() && self.registrations.get(nexus) != Some(&sa_key) {
                            return Err(PrError::Conflict);
                        }
                        for n in &preempted {
                            self.unregister(n);
                        }
                    }
                }
                self.generation = self.generation.wrapping_add(1);
                Ok(PrOutcome::Notify(preempted, Sense::REGISTRATIONS_PREEMPTED))
            }
            _ => Err(PrError::Check(
                Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(4)),
            )),
        }
    }

    fn other_registrants(&self, nexus: &str) -> Vec<String> {
        self.registrations
            .keys()
            .filter(|n| n.as_str() != nexus)
            .cloned()
            .collect()
    }

    fn with_key_except(&self, key: u64, nexus: &str) -> Vec<String> {
        self.registrations
            .iter()
            .filter(|(n, k)| **k == key && n.as_str() != nexus)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Removes a registration; a holder that unregisters gives up its
    /// reservation unless all registrants hold it and some remain.
    fn unregister(&mut self, nexus: &str) {
        self.registrations.remove(nexus);
        if let Some((holder, t)) = &self.persistent {
            let gone = if all_registrants(*t) {
                self.registrations.is_empty()
            } else {
                holder == nexus
            };
            if gone {
                self.persistent = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(key: u64, sa_key: u64) -> Vec<u8> {
        let mut p = key.to_be_bytes().to_vec();
        p.extend_from_slice(&sa_key.to_be_bytes());
        p.extend_from_slice(&[0; 8]);
        p
    }

    #[test]
    fn register_reserve_preempt() {
        let mut r = Reservations::default();
        assert!(r.out("a", 0, 0, &params(0, 1)).is_ok());
        assert!(r.out("b", 0, 0, &params(0, 2)).is_ok());
        assert_eq!(
            r.out("b", 0, 0, &params(9, 3)).err(),
            Some(PrError::Conflict)
        );
        assert!(r.out("a", 1, kind::WRITE_EXCLUSIVE, &params(1, 0)).is_ok());
        assert!(r.allows("b", Access::Read, false));
        assert!(!r.allows("b", Access::Write, false));
        assert!(r.allows("a", Access::Write, false));
        // b preempts a's reservation by naming a's key.
        assert!(r.out("b", 4, kind::EXCLUSIVE_ACCESS, &params(2, 1)).is_ok());
        assert!(!r.allows("a", Access::Read, false));
        assert!(!r.registrations.contains_key("a"));
        assert_eq!(r.generation, 3);
        let keys = r.read(0).unwrap();
        assert_eq!(&keys[4..8], &8u32.to_be_bytes());
    }

    #[test]
    fn legacy_reserve_excludes_others_until_released() {
        let mut r = Reservations::default();
        assert!(r.reserve_legacy("a"));
        assert!(!r.reserve_legacy("b"));
        assert!(!r.allows("b", Access::Read, false));
        r.release_legacy("b");
        assert!(!r.allows("b", Access::Read, false));
        r.nexus_lost("a");
        assert!(r.allows("b", Access::Write, false));
    }
}
