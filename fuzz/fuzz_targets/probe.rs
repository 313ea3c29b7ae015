//! One payload of the link that carries `ProbeMsg`, decoded as its ends do.
#![no_main]

use ferry_core::balancer::messages::ProbeMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| ferry_fuzz::check::<ProbeMsg>(payload));
