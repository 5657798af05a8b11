pub mod explain;
pub mod lint;
pub mod reconcile;
pub mod serve;
pub mod set;
pub mod tags;
