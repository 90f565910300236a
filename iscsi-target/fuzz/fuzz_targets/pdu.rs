//! Any byte stream through the PDU reader, with and without digests: it
//! must return PDUs or an error, never panic or allocate without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let flags = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or(&[]);
    hpchain_iscsi::pdu::parse_stream(rest, flags & 1 != 0, flags & 2 != 0);
});
