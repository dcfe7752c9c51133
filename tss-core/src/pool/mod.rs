//! Pool coordination: what an embedder needs around the protocols.
//!
//! (Being written: proposals, the validation hook, the abort message and the reshare
//! commit order live here.)

mod store;

pub use store::{MemoryShareStore, MemoryStoreError, ShareStore};
