//! Login and text keys: parsing and negotiating any key=value data.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pairs) = hpchain_iscsi::text::parse(data) {
        let mut params = hpchain_iscsi::text::Params::default();
        for (key, value) in &pairs {
            let _ = params.negotiate(key, value);
        }
        params.finish();
        let _ = hpchain_iscsi::text::encode(&pairs);
    }
});
