//! The actors (actix): one file each; the Supervisor's and the Campaign's
//! parts live in a directory of the same name beside it. `actors.md` at the
//! top of the repository is their map: who starts whom, the messages, the
//! invariants.

pub mod campaign;
pub mod campaigns;
pub mod cluster;
pub mod driver;
pub mod messages;
pub mod notifier;
pub mod session;
pub mod supervisor;
