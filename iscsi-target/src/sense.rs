//! SCSI status codes and sense data (SPC-4 4.5): what a failed command
//! tells the initiator.

pub const GOOD: u8 = 0x00;
pub const CHECK_CONDITION: u8 = 0x02;
pub const BUSY: u8 = 0x08;
pub const RESERVATION_CONFLICT: u8 = 0x18;
pub const TASK_ABORTED: u8 = 0x40;

/// Sense keys.
pub mod key {
    pub const NO_SENSE: u8 = 0x0;
    pub const NOT_READY: u8 = 0x2;
    pub const MEDIUM_ERROR: u8 = 0x3;
    pub const HARDWARE_ERROR: u8 = 0x4;
    pub const ILLEGAL_REQUEST: u8 = 0x5;
    pub const UNIT_ATTENTION: u8 = 0x6;
    pub const DATA_PROTECT: u8 = 0x7;
    pub const ABORTED_COMMAND: u8 = 0xb;
    pub const MISCOMPARE: u8 = 0xe;
}

/// A sense key with its additional sense code and qualifier, plus the
/// optional INFORMATION field and field pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    pub information: Option<u64>,
    /// Sense-key specific field pointer: (in the CDB?, byte, bit).
    pub field: Option<(bool, u16, Option<u8>)>,
}

macro_rules! sense_codes {
    ($($name:ident = ($key:expr, $asc:expr, $ascq:expr);)*) => {
        impl Sense {
            $(pub const $name: Sense = Sense {
                key: $key, asc: $asc, ascq: $ascq, information: None, field: None,
            };)*
        }
    };
}

sense_codes! {
    NO_SENSE = (key::NO_SENSE, 0x00, 0x00);
    INVALID_OPCODE = (key::ILLEGAL_REQUEST, 0x20, 0x00);
    LBA_OUT_OF_RANGE = (key::ILLEGAL_REQUEST, 0x21, 0x00);
    INVALID_FIELD_IN_CDB = (key::ILLEGAL_REQUEST, 0x24, 0x00);
    LUN_NOT_SUPPORTED = (key::ILLEGAL_REQUEST, 0x25, 0x00);
    INVALID_FIELD_IN_PARAMETER_LIST = (key::ILLEGAL_REQUEST, 0x26, 0x00);
    INVALID_RELEASE_OF_PR = (key::ILLEGAL_REQUEST, 0x26, 0x04);
    PARAMETER_LIST_LENGTH_ERROR = (key::ILLEGAL_REQUEST, 0x1a, 0x00);
    SAVING_PARAMETERS_NOT_SUPPORTED = (key::ILLEGAL_REQUEST, 0x39, 0x00);
    INVALID_FIELD_IN_INFORMATION_UNIT = (key::ILLEGAL_REQUEST, 0x0e, 0x03);
    MEDIUM_REMOVAL_PREVENTED = (key::ILLEGAL_REQUEST, 0x53, 0x02);
    WRITE_PROTECTED = (key::DATA_PROTECT, 0x27, 0x00);
    SPACE_ALLOCATION_FAILED = (key::DATA_PROTECT, 0x27, 0x07);
    UNRECOVERED_READ_ERROR = (key::MEDIUM_ERROR, 0x11, 0x00);
    WRITE_ERROR = (key::MEDIUM_ERROR, 0x0c, 0x00);
    NOT_READY_TRANSITION = (key::NOT_READY, 0x04, 0x0a);
    NOT_READY_STOPPED = (key::NOT_READY, 0x04, 0x02);
    INTERNAL_TARGET_FAILURE = (key::HARDWARE_ERROR, 0x44, 0x00);
    MISCOMPARE_DURING_VERIFY = (key::MISCOMPARE, 0x1d, 0x00);
    POWER_ON_RESET = (key::UNIT_ATTENTION, 0x29, 0x00);
    BUS_DEVICE_RESET = (key::UNIT_ATTENTION, 0x29, 0x03);
    CAPACITY_CHANGED = (key::UNIT_ATTENTION, 0x2a, 0x09);
    RESERVATIONS_PREEMPTED = (key::UNIT_ATTENTION, 0x2a, 0x03);
    RESERVATIONS_RELEASED = (key::UNIT_ATTENTION, 0x2a, 0x04);
    REGISTRATIONS_PREEMPTED = (key::UNIT_ATTENTION, 0x2a, 0x05);
    MODE_PARAMETERS_CHANGED = (key::UNIT_ATTENTION, 0x2a, 0x01);
    COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = (key::UNIT_ATTENTION, 0x2f, 0x00);
}

impl Sense {
    pub fn with_information(mut self, information: u64) -> Sense {
        self.information = Some(information);
        self
    }

    /// Points at the offending byte (and bit) of the CDB.
    pub fn at_cdb(mut self, byte: u16, bit: Option<u8>) -> Sense {
        self.field = Some((true, byte, bit));
        self
    }

    /// Points at the offending byte of the parameter list.
    pub fn at_parameter(mut self, byte: u16) -> Sense {
        self.field = Some((false, byte, None));
        self
    }

    /// Fixed format (0x70) or descriptor format (0x72) sense data.
    pub fn encode(&self, descriptor: bool) -> Vec<u8> {
        let sks = self.field.map(|(cdb, byte, bit)| {
            let mut b0 = 0x80u8;
            if cdb {
                b0 |= 0x40;
            }
            if let Some(bit) = bit {
                b0 |= 0x08 | (bit & 7);
            }
            [b0, (byte >> 8) as u8, byte as u8]
        });
        if descriptor {
            let mut out = vec![0x72, self.key, self.asc, self.ascq, 0, 0, 0, 0];
            if let Some(info) = self.information {
                out.extend_from_slice(&[0x00, 0x0a, 0x80, 0]);
                out.extend_from_slice(&info.to_be_bytes());
            }
            if let Some(sks) = sks {
                out.extend_from_slice(&[0x02, 0x06, 0, 0]);
                out.extend_from_slice(&sks);
                out.push(0);
            }
            out[7] = (out.len() - 8) as u8;
            out
        } else {
            let mut out = vec![0u8; 18];
            out[0] = 0x70;
            out[2] = self.key;
            if let Some(info) = self.information {
                out[0] |= 0x80;
                out[3..7].copy_from_slice(&(info as u32).to_be_bytes());
            }
            out[7] = 10;
            out[12] = self.asc;
            out[13] = self.ascq;
            if let Some(sks) = sks {
                out[15..18].copy_from_slice(&sks);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_descriptor_formats() {
        let s = Sense::LBA_OUT_OF_RANGE.with_information(7);
        let fixed = s.encode(false);
        assert_eq!(fixed.len(), 18);
        assert_eq!(
            (fixed[0], fixed[2], fixed[12], fixed[6]),
            (0xf0, 5, 0x21, 7)
        );
        let desc = s.encode(true);
        assert_eq!((desc[0], desc[1], desc[2]), (0x72, 5, 0x21));
        assert_eq!(desc[7] as usize, desc.len() - 8);
        let field = Sense::INVALID_FIELD_IN_CDB.at_cdb(1, Some(5)).encode(false);
        assert_eq!(&field[15..18], &[0xcd, 0, 1]);
    }
}
