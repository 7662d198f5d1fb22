//! The image builder: turns an appliance file, the system containers and OCI images into an
//! OS root, and that root into a bootable disk. `cargo xtask image` drives it; the `rootfs`
//! command imports images and checks appliance files.
//!
//! - [`appliance`]: the appliance file (what goes into an image) and its plan.
//! - [`assemble`]: the OS root: container roots from recipes and images, the manifest.
//! - [`disk`]: the disk layout.
//! - [`initramfs`]: the UKI's initramfs, PID 1's binary as `/init`.
//! - [`oci`]: OCI image import (layout directories, `oci-archive` and `docker save` tars,
//!   registries).
//! - [`jsonc`]: comments in hand-written JSON.

#![forbid(unsafe_code)]

pub mod appliance;
pub mod assemble;
pub mod disk;
pub mod initramfs;
pub mod jsonc;
/// OCI image import lives in its own crate (`oci/`), shared with PID 1's image store.
pub use ::oci;
