//! The image builder: turns an appliance file, the system containers and OCI images into an
//! OS root, and that root into a bootable disk. `cargo xtask image` drives it.
pub mod disk;
