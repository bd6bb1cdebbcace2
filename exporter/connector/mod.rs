//! The connector's own files on the endpoint.
//!
//! `local.xml` holds the connector's record of the definition version it has
//! and the last update error it saw; `policy.xml` holds what the console
//! configured: the update server, whether TETRA updates at all, and the
//! proxy. Both are only read, never written, each with a size cap.

pub mod local_state;
pub mod policy;

pub use crate::files::{read_capped, ReadError};
