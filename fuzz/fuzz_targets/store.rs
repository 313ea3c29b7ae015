//! Records read back from disk: log entries, users, file rows, the CLI's
//! session token, revocation expiries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferry_fuzz::check_store(data));
