//! One payload of the link that carries `BalancerMsg`, decoded as its ends do.
#![no_main]

use ferry_core::balancer::messages::BalancerMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| ferry_fuzz::check::<BalancerMsg>(payload));
