pub mod explain;
pub mod lint;
pub mod set;
pub mod tags;
