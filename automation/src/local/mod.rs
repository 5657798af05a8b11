//! The automation over a checkout, without a cluster: find the files, apply
//! the setters, and (with the Git module) commit and push.

pub mod push;
pub mod run;
pub mod tree;

pub use tree::{FileChanges, Skipped, TreeError, TreeReport, update_tree, write_atomically};
