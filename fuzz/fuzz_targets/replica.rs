//! One payload of the link that carries `ReplicaMsg`, decoded as its ends do.
#![no_main]

use ferry_core::replication::messages::ReplicaMsg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| ferry_fuzz::check::<ReplicaMsg>(payload));
