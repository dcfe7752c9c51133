//! Shared code of the fuzz targets: the postcard field tree ([`tree`]), structure-aware
//! edits of protocol messages ([`edit`]), the recorded transcript of a real run
//! ([`transcript`]) and the live-party harness ([`party`]).
#![forbid(unsafe_code)]

pub mod edit;
pub mod party;
pub mod transcript;
pub mod tree;
