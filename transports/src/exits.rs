//! The exit board: one byte per PE of a job, in memory that a node's
//! launcher shares with the ranks it starts. The launcher marks each PE that
//! left the job without finalizing, on whichever node, as the job's
//! controller tells it. A rank waiting on a peer of another node reads there
//! that the peer is gone at once, where the network takes seconds to tell
//! (a queue pair's retries) or never does (Soft-RoCE leaves requests to a
//! destroyed queue pair incomplete).
//!
//! `weftrun` makes the board in an anonymous memory file and passes its
//! descriptor to each rank in `WEFT_EXITS_FD`; the rank maps it read-only.
//!
//! ```
//! use weft_transport::exits::{ExitBoard, ExitView};
//! let board = ExitBoard::create(4)?;
//! // SAFETY: the duplicate is a fresh descriptor that nothing else owns.
//! let view = ExitView::inherit(unsafe { libc::dup(board.fd()) }, 4)?;
//! board.mark(2);
//! assert!(view.left(2) && !view.left(1));
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};

/// The name of a board's memory file, and how `/proc/self/fd` shows it.
const BOARD_NAME: &std::ffi::CStr = c"weft-exits";
const BOARD_LINK: &str = "/memfd:weft-exits";

/// A shared mapping of a board's bytes.
struct Mapping {
    ptr: NonNull<AtomicU8>,
    len: usize,
}

// SAFETY: the mapping is shared memory, reached only through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps the first `len` bytes of `fd` (at least one), shared, with `prot`.
    fn new(fd: &OwnedFd, len: usize, prot: libc::c_int) -> io::Result<Mapping> {
        // SAFETY: a fresh shared mapping of an open descriptor whose file is
        // at least `len` bytes (checked by the callers); the kernel picks the
        // address, so no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len })
    }

    fn byte(&self, pe: usize) -> Option<&AtomicU8> {
        // SAFETY: `pe < len`, so the byte lies inside the mapping, which lives
        // as long as `self`; an `AtomicU8` needs no alignment.
        (pe < self.len).then(|| unsafe { &*self.ptr.as_ptr().add(pe) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made by `Mapping::new` and not
        // unmapped before; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The launcher's side of a board: makes it and marks the PEs that left.
pub struct ExitBoard {
    map: Mapping,
    fd: OwnedFd,
}

impl ExitBoard {
    /// A board for a job of `size` PEs, none of them marked.
    pub fn create(size: usize) -> io::Result<ExitBoard> {
        let len = size.max(1);
        // SAFETY: the name is a NUL-terminated literal.
        let raw = unsafe { libc::memfd_create(BOARD_NAME.as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a descriptor just opened here and owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let bytes = libc::off_t::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: `fd` is an open memory file; a fresh one reads as zeros.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), bytes) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let map = Mapping::new(&fd, len, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(ExitBoard { map, fd })
    }

    /// The descriptor to pass to a rank. It is close-on-exec: the launcher
    /// clears that in the child, between fork and exec.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Marks PE `pe` as gone; `false` when the job has no such PE.
    pub fn mark(&self, pe: usize) -> bool {
        self.map
            .byte(pe)
            .map(|b| b.store(1, Ordering::Release))
            .is_some()
    }
}

/// A rank's side of a board: which PEs the launcher has marked.
pub struct ExitView {
    map: Mapping,
}

impl std::fmt::Debug for ExitView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let left: Vec<usize> = (0..self.map.len).filter(|&pe| self.left(pe)).collect();
        f.debug_struct("ExitView").field("left", &left).finish()
    }
}

impl ExitView {
    /// Takes descriptor `fd`, passed by the launcher, maps read-only the
    /// board of a job of `size` PEs it holds, and closes it.
    pub fn inherit(fd: RawFd, size: usize) -> io::Result<ExitView> {
        // The descriptor is taken, and closed, only once it is known to be a
        // board: a wrong number (say 1) must not close the program's stdout.
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{fd} is not an open descriptor"),
            )
        })?;
        if !link.to_string_lossy().starts_with(BOARD_LINK) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("descriptor {fd} is {}, not an exit board", link.display()),
            ));
        }
        // SAFETY: `st` is plain data that fstat fills in.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is open (its /proc link exists) and `st` a valid out-pointer.
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let len = size.max(1);
        if u64::try_from(st.st_size).unwrap_or(0) < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "descriptor {fd} is a board of {} bytes, too small for {size} PEs",
                    st.st_size
                ),
            ));
        }
        // SAFETY: `fd` is open and is a board (checked above), which the
        // launcher passed to this process to take; nothing else here owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let map = Mapping::new(&fd, len, libc::PROT_READ)?;
        Ok(ExitView { map })
    }

    /// Whether the launcher has marked PE `pe` as gone.
    pub fn left(&self, pe: usize) -> bool {
        self.map
            .byte(pe)
            .is_some_and(|b| b.load(Ordering::Acquire) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(fd: RawFd) -> RawFd {
        // SAFETY: dup only makes a new descriptor for an open one.
        unsafe { libc::dup(fd) }
    }

    #[test]
    fn marks_reach_every_view() {
        let board = ExitBoard::create(3).unwrap();
        let views: Vec<ExitView> = (0..2)
            .map(|_| ExitView::inherit(dup(board.fd()), 3).unwrap())
            .collect();
        assert!((0..3).all(|pe| !views[0].left(pe)));
        assert!(board.mark(1));
        assert!(!board.mark(3));
        for v in &views {
            assert_eq!(
                (0..4).map(|pe| v.left(pe)).collect::<Vec<_>>(),
                [false, true, false, false]
            );
        }
    }

    #[test]
    fn a_bad_descriptor_is_an_error() {
        assert!(ExitView::inherit(-1, 2).is_err());
        assert!(ExitView::inherit(1 << 20, 2).is_err());
        // Too small for the job.
        let board = ExitBoard::create(2).unwrap();
        assert!(ExitView::inherit(dup(board.fd()), 5).is_err());
        // Not a regular file.
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let err = ExitView::inherit(fds[0], 2).err().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A descriptor that is not a board is left open.
        for fd in fds {
            // SAFETY: F_GETFD reads flags; both ends are ours to close.
            unsafe {
                assert!(libc::fcntl(fd, libc::F_GETFD) >= 0);
                libc::close(fd);
            }
        }
    }
}
