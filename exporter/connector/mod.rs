//! The connector's own files on the endpoint.
//!
//! Only `local.xml` is read here: the connector's record of the definition
//! version it holds and the last update error it saw. Nothing is written.

pub mod local_state;
