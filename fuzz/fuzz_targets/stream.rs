//! A byte stream through the streaming `FrameDecoder`, in reads of varying
//! sizes, each frame then decoded by its tag as a server's listener would.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ferry_fuzz::check_stream(data));
