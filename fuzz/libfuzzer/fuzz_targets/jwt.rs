#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::jwt::jwt(data));
