//! The contract shared by PID 1, the `sysctr` CLI and the image build: the manifest schema
//! (`schema`), its validation (`validate`), the control-socket protocol (`protocol`, with the
//! update requests in `protocol_update`) and the update bundle format (`bundle`).
//!
//! Loading never stops at the first problem: syntax errors carry line and column, and every
//! other problem names the file, the service and the field, so one broken service can be
//! failed on its own while the rest of the system boots.

#![forbid(unsafe_code)]

pub mod applied;
pub mod bundle;
pub mod load;
pub mod protocol;
pub mod protocol_update;
pub mod schema;
pub mod units;
pub mod validate;

pub use load::{load_file, load_str, LoadError, Loaded, Rejected};
pub use schema::*;
pub use validate::{validate, Problem};
