//! Commit signature verification, in process: the trusted keys and the
//! verdict on one raw commit object. So far: the signed bytes of a commit
//! object and the SSH allowed-signers file.

// Nothing in the pass calls this module yet; drop this when it is wired in.
#![allow(dead_code, unused_imports)]

pub mod allowed_signers;
pub mod commit;

pub use commit::committer_time;
