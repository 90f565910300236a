//! hpchain-iscsi: the iSCSI target (RFC 7143) and SCSI block commands
//! (SPC-4/SBC-3) over a `BlockDevice` trait. Not built yet: this crate is a
//! member of the workspace so that its place is fixed (see
//! docs/architecture.md); the engine does not depend on it.
