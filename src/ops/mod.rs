//! Commands for operators beside the pass: `status` today.

pub mod status;
