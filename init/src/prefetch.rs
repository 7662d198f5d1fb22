//! PID 1's own binary read into the page cache by a child process at the very start of
//! boot, while PID 1 goes on with its boot steps on the other CPU.
//!
//! init is a 6 MB static binary on the compressed root: every first touch of one of its
//! pages makes squashfs decompress the block around it, and PID 1 waits. Nearly all of it is
//! touched by the time the services run (boot, libcontainer, the control server), so a child
//! reading the file from start to end does that decompression beside PID 1 instead of in
//! its path. The child only reads and exits; its exit is reaped like any other.
//!
//! Measured (development image, direct kernel, TCG, 4 boots each, `cargo xtask run
//! --direct-kernel --fresh`): `main()` → manifest loaded 389–432 → 331–370 ms, the kernel
//! running init → all services ready 1999–2142 → 1866–1978 ms.

/// Forks the reader. Called before anything else is set up, while PID 1 is one thread.
pub fn own_binary() {
    if let Some(path) = std::env::args_os().next() {
        // Nothing to do when fork fails: PID 1 then pages the binary in itself.
        let _ = crate::sys::read_in_child(std::path::Path::new(&path));
    }
}
