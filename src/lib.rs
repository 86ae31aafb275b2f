//! wasup: a supervisor daemon that keeps WhatsApp Web sessions alive around
//! the clock, controlled over HTTP.
//!
//! Code map (see `actors.md` for the actors and their invariants):
//! - [`actors`]: Driver (chromedriver), Session (one browser per account),
//!   Supervisor (the set of sessions and the restart policy).
//! - [`policy`]: pure decisions (what a session's end means, backoff).
//! - [`whatsapp`]: the page adapter and everything that knows WhatsApp Web.
//! - [`sim`]: the WhatsApp Web simulator (`wasup sim`).
//! - [`http`]: the control API; [`store`]: sled; [`config`]: `config.toml`.
//! - [`attachments`]: campaign attachments, files beside the store.
//! - [`webhooks`]: the durable outbox and delivery worker of the webhooks.
//! - [`relay`]: cluster mode's event relay (PostgreSQL `LISTEN`/`NOTIFY`).
//! - [`webdriver_double`]: a browser test double for the cluster bench
//!   ([`bench_cluster`]) only.

pub mod actors;
pub mod attachments;
pub mod bench;
pub mod bench_cluster;
pub mod bench_hostile;
pub mod bench_idle;
pub mod bench_versus;
pub mod campaign;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod http;
pub mod launch;
pub mod notify;
pub mod optout;
pub mod pg_harness;
pub mod policy;
pub mod procfs;
pub mod profile;
pub mod qr;
pub mod relay;
pub mod session_state;
pub mod sim;
pub mod store;
pub mod webdriver_double;
pub mod webhooks;
pub mod whatsapp;
