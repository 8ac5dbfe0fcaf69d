//! The bake process: `postpub bake-server` (hidden), started by the daemon's bake pool.
//! It bakes one request at a time from stdin to stdout ([`super::wire`]) until stdin
//! closes, keeping parsed recipes by key.
//!
//! It is single-threaded and runs no async runtime, so its address-space limit
//! (`RLIMIT_AS` = `pipeline.collate.max_memory_bytes`) is spent on baking. An allocation
//! the limit refuses aborts this process, not the daemon; the daemon reads the exit
//! status and the last lines of stderr and errors the version with them. Terminal and
//! service-manager signals (INT, TERM, HUP) are ignored: the daemon decides when its
//! bakes stop (it closes stdin, or kills the process on a timeout), and the process dies
//! with the daemon (`PR_SET_PDEATHSIG`).

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::wire::{self, std_io, BakeEnd, Reply, Request};
use crate::collate::Recipe;

/// Parsed recipes kept (a new one evicts all when full: recipes are few).
const CACHE_SIZE: usize = 128;

/// Runs the bake server on stdin/stdout with at most `max_memory_bytes` of address space.
pub fn serve(max_memory_bytes: u64) -> std::io::Result<()> {
    limit_address_space(max_memory_bytes)?;
    detach_from_signals();
    let input = BufReader::with_capacity(1 << 16, std::io::stdin().lock());
    let output = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    Server::default().run(input, output, max_memory_bytes)
}

/// A bake server's state: the recipes it parsed.
#[derive(Default)]
pub(super) struct Server {
    recipes: HashMap<String, Arc<Result<Recipe, String>>>,
    /// Recipes parsed so far (cache misses), for tests.
    pub(super) parses: u64,
}

impl Server {
    /// Greets, then answers requests until `input` ends.
    pub(super) fn run(
        &mut self,
        mut input: impl Read,
        mut output: impl Write,
        max_frame: u64,
    ) -> std::io::Result<()> {
        std_io::write(&mut output, wire::HELLO)?;
        output.flush()?;
        loop {
            let Some(header) = std_io::read(&mut input, wire::MAX_HEADER_BYTES)? else {
                return Ok(());
            };
            let request: Request = serde_json::from_slice(&header).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("request: {e}"))
            })?;
            let css = frame(&mut input, max_frame)?;
            let body = frame(&mut input, max_frame)?;
            let (reply, html) = self.bake(&request, css, body);
            let header = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
            std_io::write(&mut output, &header)?;
            if let Some(html) = html {
                std_io::write(&mut output, html.as_bytes())?;
            }
            output.flush()?;
        }
    }

    fn bake(&mut self, request: &Request, css: Vec<u8>, body: Vec<u8>) -> (Reply, Option<String>) {
        let fail = |outcome, error: String| {
            (
                Reply {
                    outcome,
                    error,
                    warnings: Vec::new(),
                },
                None,
            )
        };
        let recipe = match self.recipes.get(&request.key) {
            Some(r) => r.clone(),
            None => {
                self.parses += 1;
                let parsed = match String::from_utf8(css) {
                    Ok(css) => catch_unwind(AssertUnwindSafe(|| {
                        super::parse_recipe(&css, &request.config)
                    }))
                    .unwrap_or_else(|p| {
                        Err(format!("the recipe parser failed: {}", panic_text(&p)))
                    }),
                    Err(e) => Err(format!("the recipe is not UTF-8: {e}")),
                };
                let parsed = Arc::new(parsed);
                if self.recipes.len() >= CACHE_SIZE {
                    self.recipes.clear();
                }
                self.recipes.insert(request.key.clone(), parsed.clone());
                parsed
            }
        };
        let recipe = match &*recipe {
            Ok(r) => r,
            Err(e) => return fail(BakeEnd::RecipeError, e.clone()),
        };
        let body = match String::from_utf8(body) {
            Ok(b) => b,
            Err(e) => return fail(BakeEnd::BakeError, format!("the body is not UTF-8: {e}")),
        };
        // A panic in the baker is a bug; it errors this version, and this process goes on
        // (each bake has state of its own, the recipe is never changed by baking).
        match catch_unwind(AssertUnwindSafe(|| {
            super::bake_body(recipe, &body, &request.config)
        })) {
            Ok(Ok(baked)) => (
                Reply {
                    outcome: BakeEnd::Baked,
                    error: String::new(),
                    warnings: baked.warnings,
                },
                Some(baked.html),
            ),
            Ok(Err(e)) => fail(BakeEnd::BakeError, e),
            Err(p) => fail(
                BakeEnd::BakeError,
                format!("collation failed: the baker panicked: {}", panic_text(&p)),
            ),
        }
    }
}

/// The next frame, which must be there (a request is three frames).
fn frame(input: &mut impl Read, max: u64) -> std::io::Result<Vec<u8>> {
    std_io::read(input, max)?.ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a request ended early")
    })
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// `RLIMIT_AS`: every mapping of this process (heap, stacks, the binary itself) counts,
/// so the limit is what the bake may take from the machine.
fn limit_address_space(bytes: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: bytes as libc::rlim_t,
        rlim_max: bytes as libc::rlim_t,
    };
    // SAFETY: setrlimit reads the struct we pass and changes only this process's limit.
    if unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Ignores INT, TERM and HUP (Ctrl-C in a terminal or `systemctl stop` reach the whole
/// process group or cgroup; the daemon, draining, still needs its bakes), and asks the
/// kernel to kill this process when the daemon dies.
fn detach_from_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_IGN installs no handler code; only this process's disposition
        // changes, before any other thread exists.
        unsafe {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and changes only this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CollateConfig;

    fn request(out: &mut Vec<u8>, key: &str, css: &str, body: &str) {
        let r = Request {
            key: key.to_owned(),
            config: CollateConfig::default(),
        };
        std_io::write(out, &serde_json::to_vec(&r).expect("json")).expect("write");
        std_io::write(out, css.as_bytes()).expect("write");
        std_io::write(out, body.as_bytes()).expect("write");
    }

    fn replies(out: &[u8]) -> Vec<(Reply, Option<String>)> {
        let mut r = out;
        assert_eq!(
            std_io::read(&mut r, 1 << 20).expect("hello"),
            Some(wire::HELLO.to_vec())
        );
        let mut all = Vec::new();
        while let Some(h) = std_io::read(&mut r, 1 << 20).expect("reply") {
            let reply: Reply = serde_json::from_slice(&h).expect("reply json");
            let html = (reply.outcome == BakeEnd::Baked).then(|| {
                String::from_utf8(std_io::read(&mut r, 1 << 20).expect("html").expect("html"))
                    .expect("utf-8")
            });
            all.push((reply, html));
        }
        all
    }

    #[test]
    fn requests_are_answered_in_order_and_recipes_parsed_once() {
        let mut input = Vec::new();
        let css =
            "div::after { content: pending(notes); class: notes; }\np.note { move-to: notes; }";
        request(&mut input, "k1", css, "<div><p class=\"note\">a</p></div>");
        request(&mut input, "k1", css, "<div><p class=\"note\">b</p></div>");
        request(&mut input, "k2", "p[ { }", "<p/>");
        request(&mut input, "k1", css, "<div><p>open</div>");
        let mut out = Vec::new();
        let mut server = Server::default();
        server
            .run(&input[..], &mut out, 1 << 20)
            .expect("serves until the input ends");
        let r = replies(&out);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].0.outcome, BakeEnd::Baked);
        let baked =
            |x: &str| format!("<div><div class=\"notes\"><p class=\"note\">{x}</p></div></div>\n");
        assert_eq!(r[0].1.as_deref(), Some(baked("a").as_str()));
        assert_eq!(r[1].1.as_deref(), Some(baked("b").as_str()));
        assert_eq!(r[2].0.outcome, BakeEnd::RecipeError);
        assert!(r[2].0.error.contains("not valid CSS"), "{:?}", r[2].0);
        assert_eq!(r[3].0.outcome, BakeEnd::BakeError);
        assert_eq!(server.parses, 2, "k1 parsed once, k2 once");
    }

    #[test]
    fn a_request_cut_short_is_an_error() {
        let mut input = Vec::new();
        request(&mut input, "k", "p {}", "<p/>");
        input.truncate(input.len() - 2);
        let mut out = Vec::new();
        assert!(Server::default()
            .run(&input[..], &mut out, 1 << 20)
            .is_err());
    }
}
