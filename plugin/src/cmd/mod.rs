pub mod explain;
pub mod lint;
pub mod reconcile;
pub mod set;
pub mod tags;
