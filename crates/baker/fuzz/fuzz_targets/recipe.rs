//! Any text as a recipe: parsing (strict and compatible) returns a recipe or an error,
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postpub_baker::Recipe;

fuzz_target!(|data: &[u8]| {
    if let Ok(css) = std::str::from_utf8(data) {
        let _ = Recipe::parse_strict(css);
        let _ = Recipe::parse(css);
    }
});
