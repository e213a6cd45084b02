//! airgap-bundle: carry a Kubernetes site's artifacts across an air gap in one signed,
//! seekable, zstd-compressed tarball, and install them on the other side.
//!
//! Data flows one way: [`manifest`] → [`lock`] → [`fetch`] → [`bundle`] (writer) → USB →
//! [`bundle`] (reader) → [`install`]. A module never reaches back up that chain.

pub mod apt;
pub mod bundle;
pub mod create;
pub mod delta;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod fs;
pub mod helm;
pub mod inspect;
pub mod install;
pub mod lock;
pub mod manifest;
pub mod progress;
pub mod python;
pub mod registry;
pub mod timefmt;

pub use error::{Error, Result};
