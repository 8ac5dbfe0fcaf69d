//! postpub: a daemon that finishes what a publishing application starts.
//!
//! An application publishes a version of a document into PostgreSQL (`postpub.publish`);
//! a statement-level trigger NOTIFYs; the daemon claims the version, runs its pipeline
//! (validate, collate with the version's CSS recipe, external commands) and makes it the
//! document's single current version, with an outbox event, or marks it errored.
//!
//! Architecture map (one module per concern; `docs/architecture.md` says what flows
//! between them and what each may not know). Top-level modules import each other
//! without cycles.
//! - [`config`]   — TOML + `POSTPUB__*` + `DATABASE_URL` layering, validated once; it
//!   imports only leaves ([`backoff`], [`logging`], [`collate`], [`conninfo`]).
//! - [`backoff`]  — retry delays (exponential, with jitter) and the pause after a failed
//!   database round; the worker and the relay share it.
//! - [`conninfo`] — libpq connection strings: the TLS and password parameters psql users
//!   write, taken out before the driver reads the rest (syntax only; `config` and `db`
//!   both use it).
//! - [`db`]       — connections, the pool, typed errors, `State`; [`db::endpoint`] turns a
//!   URL, `[database]` and the environment into connections (TLS in [`db::tls`]);
//!   [`db::migrate`] applies `sql/NNNN_*.sql`; [`db::sql`] holds the statements of
//!   `sql/queries/`; [`db::row`] reads query results into a struct per query, by column
//!   name.
//! - [`service`]  — what every service gets from the daemon (pool, target, actor,
//!   events).
//! - [`listener`] — the dedicated LISTEN connection: reconnect, re-LISTEN, wake-ups.
//! - [`worker`]   — the worker service, one file per part: the claim loop, the finisher,
//!   the lease renewer, the per-version process, the in-flight registry and the slots;
//!   [`worker::claim`] wraps the claim/finish SQL; [`worker::rescuer`] takes back
//!   expired leases.
//! - [`pipeline`] — the `Step` trait and the steps (`noop`, `validate`, `collate`,
//!   `command`); [`pipeline::collate`] bakes in bake processes (`postpub bake-server`)
//!   and keeps the daemon's one recipe cache.
//! - [`collate`]  — the baker: the `postpub-baker` crate in `crates/baker`, re-exported.
//!   Recipe + XHTML in, XHTML out; it knows no database and no daemon.
//! - [`outbox`]   — the relay: delivers outbox events in per-document order to the
//!   configured sinks ([`outbox::nats`] JetStream, [`outbox::webhook`] HTTP; each file
//!   also checks its own `[[outbox.sinks]]` table), retries, parks, deletes delivered
//!   events after retention.
//! - [`daemon`]   — wires the services together for `postpub run` (and `postpub relay`);
//!   nothing else starts them.
//! - [`http`]     — `/healthz`, `/readyz`, `/metrics` and the read-only document API.
//! - [`systemd`]  — `Type=notify`: READY, WATCHDOG, RELOADING and STOPPING.
//! - [`shutdown`] — signals to cancellation tokens (and SIGHUP to reloads).
//! - [`event`]    — what services report (tests wait on it; metrics count it).
//! - [`admin`]    — status, requeue and publish for the CLI.
//! - [`demo`]     — the self-contained showcase; [`bench`] — the benchmarks.
//! - [`cluster`]  — throwaway PostgreSQL clusters from the installed server programs, for
//!   the demo on a machine without a server and for the tests ([`cluster::shared`]).
//! - [`cli`]      — clap subcommands; [`logging`] sets up tracing; [`output`] prints a
//!   command's story to stdout (a closed pipe ends it quietly).
//!
//! Business rules (one current per document, supersede, fencing, outbox in the same
//! transaction) live in SQL under `sql/`, where the database enforces them.

pub mod admin;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod cluster;
/// The recipe baker: the `postpub-baker` crate (`crates/baker`), which the `collate` step
/// and `postpub bake` call.
pub use postpub_baker as collate;
pub mod config;
pub mod conninfo;
pub mod daemon;
pub mod db;
pub mod demo;
pub mod event;
pub mod http;
pub mod listener;
pub mod logging;
pub mod outbox;
pub mod output;
pub mod pipeline;
pub mod service;
pub mod shutdown;
pub mod systemd;
pub mod worker;
