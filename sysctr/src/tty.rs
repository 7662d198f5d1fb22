//! The local terminal for `sysctr exec -t`: window sizes (the only `unsafe` in this crate,
//! two ioctls) and raw mode that is undone on every way out of the command.

#![allow(unsafe_code)]

use nix::pty::Winsize;
use nix::sys::termios::{self, SetArg, Termios};
use std::os::fd::{AsRawFd, BorrowedFd};

nix::ioctl_read_bad!(tiocgwinsz, libc::TIOCGWINSZ, Winsize);
nix::ioctl_write_ptr_bad!(tiocswinsz, libc::TIOCSWINSZ, Winsize);

/// The window size of the terminal on `fd`, or `None` when it is not a terminal.
pub fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut ws = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` through the pointer, which points at a
    // live, properly aligned `Winsize` (nix's alias of `libc::winsize`).
    let res = unsafe { tiocgwinsz(fd.as_raw_fd(), &mut ws) };
    res.ok()
        .filter(|_| ws.ws_row > 0 && ws.ws_col > 0)
        .map(|_| ws)
}

/// Sets the window size of the terminal (a pty master) on `fd`; the kernel sends SIGWINCH
/// to the foreground process group on the other side.
pub fn set_window_size(fd: BorrowedFd<'_>, ws: &Winsize) -> nix::Result<()> {
    // SAFETY: TIOCSWINSZ only reads one `struct winsize` through the pointer, which points
    // at a live `Winsize` for the duration of the call.
    unsafe { tiocswinsz(fd.as_raw_fd(), ws) }.map(|_| ())
}

/// The terminal on a file descriptor switched to raw mode; dropping it restores the mode it
/// had, so a return, an error or a panic all leave the user's terminal usable.
pub struct RawMode<'fd> {
    fd: BorrowedFd<'fd>,
    saved: Termios,
}

impl<'fd> RawMode<'fd> {
    pub fn enter(fd: BorrowedFd<'fd>) -> nix::Result<RawMode<'fd>> {
        let saved = termios::tcgetattr(fd)?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSAFLUSH, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn pty_window_size_round_trips() {
        let ws = Winsize {
            ws_row: 33,
            ws_col: 101,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&ws), None).unwrap();
        let got = window_size(pty.slave.as_fd()).unwrap();
        assert_eq!((got.ws_row, got.ws_col), (33, 101));
        let bigger = Winsize {
            ws_row: 50,
            ws_col: 160,
            ..ws
        };
        set_window_size(pty.master.as_fd(), &bigger).unwrap();
        let got = window_size(pty.slave.as_fd()).unwrap();
        assert_eq!((got.ws_row, got.ws_col), (50, 160));
    }

    #[test]
    fn raw_mode_is_restored_on_drop() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let before = termios::tcgetattr(pty.slave.as_fd()).unwrap();
        {
            let _raw = RawMode::enter(pty.slave.as_fd()).unwrap();
            let during = termios::tcgetattr(pty.slave.as_fd()).unwrap();
            assert!(!during.local_flags.contains(termios::LocalFlags::ICANON));
        }
        let after = termios::tcgetattr(pty.slave.as_fd()).unwrap();
        assert_eq!(before.local_flags, after.local_flags);
        assert!(after.local_flags.contains(termios::LocalFlags::ICANON));
    }
}
