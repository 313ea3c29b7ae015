//! One payload of the link that carries `BlobMsg`, decoded as its ends do.
#![no_main]

use ferry_core::server::BlobMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| ferry_fuzz::check::<BlobMsg>(payload));
