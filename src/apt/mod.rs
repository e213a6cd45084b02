//! Debian apt repositories: the signed Release and its key, the `Packages` indexes it
//! vouches for, dependency relations with Debian version ordering, and the dependency
//! closure of the packages a manifest names.

pub mod packages;
pub mod relation;
pub mod release;
pub mod resolve;
