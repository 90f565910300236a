//! hpchain-iscsi: an iSCSI target (RFC 7143) with the SCSI block command
//! set (SPC-4, SBC-3) over a [`BlockDevice`] trait.
//!
//! The crate knows nothing of hpchain's engine: the node daemon wraps a
//! volume in a `BlockDevice` and adds it to a [`Portal`] as an export.
//! Tests and the standalone target use [`FileDevice`].
//!
//! - [`pdu`]: the wire format, digests included.
//! - [`text`] and [`login`]: key negotiation, CHAP.
//! - [`target`]: the portal, sessions, connections, task management.
//! - [`scsi`], [`sense`], [`pr`]: the logical unit and its commands.

pub mod device;
pub mod initiator;
pub mod login;
pub mod pdu;
pub mod pr;
pub mod scsi;
pub mod sense;
pub mod target;
pub mod text;

pub use device::{BlockDevice, DeviceError, FileDevice};
pub use login::Chap;
pub use target::{ExportConfig, ExportError, Portal, IQN_PREFIX};
