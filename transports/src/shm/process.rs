//! A peer's process on this node: whether it still runs (a pidfd), and
//! reading and writing its memory with `process_vm_readv`/`writev`
//! (cross-memory attach): the single copy of an on-node rendezvous, which
//! both sides may share.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::{Gone, TransportError};

/// A peer process, by pid, watched through a pidfd when the kernel has them.
pub(crate) struct PeerProcess {
    peer: usize,
    pid: libc::pid_t,
    /// Readable once the process has exited; `None` on kernels before 5.3,
    /// where `kill(pid, 0)` stands in.
    pidfd: Option<OwnedFd>,
}

impl PeerProcess {
    /// Watches PE `peer`, process `pid`.
    pub(crate) fn new(peer: usize, pid: libc::pid_t) -> PeerProcess {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let pidfd = (fd >= 0).then(|| {
            // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
            unsafe { OwnedFd::from_raw_fd(fd as i32) }
        });
        PeerProcess { peer, pid, pidfd }
    }

    /// Whether the process is still running.
    pub(crate) fn alive(&self) -> bool {
        match &self.pidfd {
            Some(fd) => {
                let mut p = libc::pollfd {
                    fd: fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: `p` is one valid pollfd; a zero timeout never blocks.
                let n = unsafe { libc::poll(&mut p, 1, 0) };
                n == 0
            }
            // SAFETY: signal 0 only checks that the process exists.
            None => (unsafe { libc::kill(self.pid, 0) }) == 0,
        }
    }

    /// Copies `dst.len()` bytes from `addr` in the process into `dst`.
    pub(crate) fn read(&self, addr: u64, dst: &mut [u8]) -> Result<(), TransportError> {
        let (ptr, len) = (dst.as_mut_ptr(), dst.len());
        // SAFETY: `dst` is memory we own exclusively, valid for `len` bytes.
        unsafe { self.transfer(addr, ptr, len, Direction::Read) }
    }

    /// Copies `src` to `addr` in the process.
    pub(crate) fn write(&self, addr: u64, src: &[u8]) -> Result<(), TransportError> {
        // SAFETY: `src` is valid for reads of its length; the kernel only
        // reads it in a write.
        unsafe { self.transfer(addr, src.as_ptr().cast_mut(), src.len(), Direction::Write) }
    }

    /// Moves `len` bytes between `local` in this process and `addr` in the
    /// peer's, in the given direction: straight, or through this thread's
    /// bounce buffer when the kernel's copy would be at a slow distance
    /// (`weft_copy::slow_distance`, on AMD processors: at 16 KiB-1 MiB it
    /// ran at 1.1-1.9 GB/s there, 3.5-9.6 elsewhere). With the bounce, a 2-rank ping-pong of
    /// 16-256 KiB messages between buffers 16 bytes apart modulo a page
    /// took 4.0-22.6 µs instead of 8.8-77.6, near the 3.6-21.4 of buffers
    /// at equal offsets.
    ///
    /// # Safety
    /// `local` must be valid for `len` bytes: writable (and not otherwise
    /// accessed meanwhile) for a read, readable for a write.
    unsafe fn transfer(
        &self,
        addr: u64,
        local: *mut u8,
        len: usize,
        direction: Direction,
    ) -> Result<(), TransportError> {
        let remote = addr as usize as *const u8;
        let slow = match direction {
            Direction::Read => weft_copy::slow_distance(remote, local, len),
            Direction::Write => weft_copy::slow_distance(local, remote, len),
        };
        if slow {
            // SAFETY: the caller's promise.
            unsafe { self.transfer_bounced(addr, local, len, direction) }
        } else {
            // SAFETY: the caller's promise.
            unsafe { self.transfer_straight(addr, local, len, direction) }
        }
    }

    /// [`PeerProcess::transfer`] through this thread's bounce buffer.
    ///
    /// # Safety
    /// As for [`PeerProcess::transfer`].
    unsafe fn transfer_bounced(
        &self,
        addr: u64,
        local: *mut u8,
        len: usize,
        direction: Direction,
    ) -> Result<(), TransportError> {
        BOUNCE_BUFFER.with_borrow_mut(|buffer| {
            buffer.resize(BOUNCE + PAGE, 0);
            // Where the bounced bytes start: at the remote side's offset in
            // a page, so that the kernel copies between equal offsets.
            let base = buffer.as_mut_ptr();
            let at = (addr as usize).wrapping_sub(base as usize) % PAGE;
            let mut done = 0;
            while done < len {
                let piece = (len - done).min(BOUNCE);
                // SAFETY: `at + piece <= PAGE + BOUNCE`, the buffer's length.
                let bounce = unsafe { base.add(at) };
                // SAFETY: `done + piece <= len`, inside the caller's range;
                // the buffer is this thread's alone and distinct from it.
                unsafe {
                    let here = local.add(done);
                    let there = addr + done as u64;
                    match direction {
                        Direction::Read => {
                            self.transfer_straight(there, bounce, piece, direction)?;
                            weft_copy::copy_nonoverlapping(bounce, here, piece);
                        }
                        Direction::Write => {
                            weft_copy::copy_nonoverlapping(here, bounce, piece);
                            self.transfer_straight(there, bounce, piece, direction)?;
                        }
                    }
                }
                done += piece;
            }
            Ok(())
        })
    }

    /// [`PeerProcess::transfer`] in one kernel copy.
    ///
    /// # Safety
    /// As for [`PeerProcess::transfer`].
    unsafe fn transfer_straight(
        &self,
        addr: u64,
        local: *mut u8,
        len: usize,
        direction: Direction,
    ) -> Result<(), TransportError> {
        let mut done = 0;
        while done < len {
            let here = libc::iovec {
                // SAFETY: `done < len`, so inside the caller's range.
                iov_base: unsafe { local.add(done) }.cast(),
                iov_len: len - done,
            };
            let there = libc::iovec {
                iov_base: (addr as usize + done) as *mut libc::c_void,
                iov_len: len - done,
            };
            // SAFETY: `here` describes the caller's memory (see above); the
            // kernel checks the remote range against the peer's mappings
            // and fails with EFAULT instead of touching anything else.
            let n = unsafe {
                match direction {
                    Direction::Read => libc::process_vm_readv(self.pid, &here, 1, &there, 1, 0),
                    Direction::Write => libc::process_vm_writev(self.pid, &here, 1, &there, 1, 0),
                }
            };
            if n <= 0 {
                let err = std::io::Error::last_os_error();
                let (what, able) = match direction {
                    Direction::Read => ("reading the peer's memory (process_vm_readv)", "readable"),
                    Direction::Write => {
                        ("writing the peer's memory (process_vm_writev)", "writable")
                    }
                };
                return Err(match err.raw_os_error() {
                    Some(libc::EPERM | libc::EACCES | libc::ENOSYS) | None => {
                        TransportError::Unsupported {
                            peer: self.peer,
                            what,
                            reason: err.to_string(),
                        }
                    }
                    Some(libc::ESRCH) => TransportError::PeerGone {
                        peer: self.peer,
                        how: Gone::Exited,
                    },
                    Some(_) => TransportError::Malformed {
                        peer: self.peer,
                        detail: format!(
                            "{len} bytes at {addr:#x} are not {able} in its process: {err}"
                        ),
                    },
                });
            }
            done += n as usize;
        }
        Ok(())
    }
}

/// Bytes a transfer at a slow distance moves through the bounce buffer at
/// a time.
const BOUNCE: usize = 64 * 1024;
const PAGE: usize = 4096;

thread_local! {
    /// Where transfers at a slow distance pass, [`BOUNCE`] bytes and a page
    /// to place them at any offset; allocated on first use.
    static BOUNCE_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Which way [`PeerProcess::transfer`] copies.
#[derive(Clone, Copy)]
enum Direction {
    Read,
    Write,
}

/// Lets processes of the same user read this one's memory under the Yama
/// security module (`kernel.yama.ptrace_scope = 1` admits only descendants
/// otherwise), as MPI libraries do for cross-memory attach. Harmless where
/// Yama is absent.
pub(crate) fn allow_peer_reads() {
    // SAFETY: PR_SET_PTRACER takes a pid or PR_SET_PTRACER_ANY; it changes
    // only this process's ptrace policy and fails harmlessly without Yama.
    unsafe { libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_own_memory_and_reports_bad_addresses() {
        allow_peer_reads();
        // SAFETY: getpid has no preconditions.
        let me = PeerProcess::new(3, unsafe { libc::getpid() });
        assert!(me.alive());
        let src: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut dst = vec![0u8; src.len()];
        me.read(src.as_ptr() as u64, &mut dst).unwrap();
        assert_eq!(src, dst);
        let err = me.read(8, &mut dst[..16]).unwrap_err();
        assert!(
            matches!(err, TransportError::Malformed { peer: 3, .. }),
            "{err}"
        );
        let mut back = vec![0u8; src.len()];
        me.write(back.as_mut_ptr() as u64, &src).unwrap();
        assert_eq!(src, back);
        let err = me.write(8, &src[..16]).unwrap_err();
        assert!(
            matches!(err, TransportError::Malformed { peer: 3, .. }),
            "{err}"
        );
    }

    /// Transfers through the bounce buffer (those whose two ends sit 1-31
    /// bytes apart modulo a page, on processors slow there) arrive whole,
    /// in both directions, in one piece and in several.
    #[test]
    fn bounced_transfers_arrive_whole() {
        allow_peer_reads();
        // SAFETY: getpid has no preconditions.
        let me = PeerProcess::new(0, unsafe { libc::getpid() });
        let len = BOUNCE * 2 + 1000;
        let src: Vec<u8> = (0..len + PAGE).map(|i| (i % 251) as u8).collect();
        let mut arena = vec![0u8; len + 3 * PAGE];
        for distance in [1, 16, 31] {
            for n in [PAGE, len] {
                let from = &src[..n];
                let want = (from.as_ptr() as usize + distance) % PAGE;
                let at = (want + PAGE - arena.as_ptr() as usize % PAGE) % PAGE;
                let to = &mut arena[at..at + n];
                let (src, dst) = (from.as_ptr(), to.as_mut_ptr());
                to.fill(0);
                // SAFETY: `to` is ours and valid for `n` bytes, and `from`
                // readable for as many.
                unsafe { me.transfer_bounced(src as u64, dst, n, Direction::Read) }.unwrap();
                assert!(to == from, "read of {n} bytes at distance {distance}");
                to.fill(0);
                // SAFETY: as above, the other way.
                let w =
                    unsafe { me.transfer_bounced(dst as u64, src.cast_mut(), n, Direction::Write) };
                w.unwrap();
                assert!(to == from, "write of {n} bytes at distance {distance}");
            }
        }
    }

    #[test]
    fn an_exited_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let watched = PeerProcess::new(1, child.id() as libc::pid_t);
        child.wait().unwrap();
        assert!(!watched.alive());
    }
}
