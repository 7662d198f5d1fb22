//! The image builder: turns an appliance file, the system containers and OCI images into an
//! OS root, and that root into a bootable disk. `cargo xtask image` drives it.
//!
//! - [`disk`]: the disk layout.
//! - [`oci`]: OCI image import (layout directories, `oci-archive` and `docker save` tars).

#![forbid(unsafe_code)]

pub mod disk;
pub mod oci;
