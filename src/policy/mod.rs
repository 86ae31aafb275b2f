//! Pure decisions, no I/O: time and randomness are arguments, so these are
//! unit- and property-tested with no browser, clock or actor system. The
//! actors (`crate::actors`) feed them events and carry out what they decide.

pub mod restart;

pub mod campaign;
pub mod delivery;
pub mod health;
pub mod objectives;
pub mod pacing;
pub mod slot;

pub use restart::{Action, Decision, EndReason, Policy, Restarts};
