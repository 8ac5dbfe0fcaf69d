//! A recipe and a document from one input (split at the first NUL byte): baking returns a
//! document that is namespace-well-formed XML, or an error within its limits; never panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use postpub_baker::{Limits, Recipe};

fuzz_target!(|data: &[u8]| {
    let Some(split) = data.iter().position(|b| *b == 0) else {
        return;
    };
    let (Ok(css), Ok(html)) = (
        std::str::from_utf8(&data[..split]),
        std::str::from_utf8(&data[split + 1..]),
    ) else {
        return;
    };
    let limits = Limits {
        max_duration: Some(Duration::from_secs(2)),
        max_nodes_extra: 10_000,
        max_output_extra: 1 << 20,
        max_text_extra: 1 << 20,
        ..Limits::default()
    };
    if let Ok(recipe) = Recipe::parse(css) {
        if let Ok(baked) = recipe.bake_with_limits(html, &limits) {
            let opts = roxmltree::ParsingOptions {
                allow_dtd: true,
                ..Default::default()
            };
            if let Err(e) = roxmltree::Document::parse_with_options(&baked.html, opts) {
                panic!("the output is not XML ({e}):\n{}", baked.html);
            }
        }
    }
});
