//! A peer's process on this node: whether it still runs (a pidfd) and reading
//! its memory with `process_vm_readv` (cross-memory attach), the single copy
//! of an on-node rendezvous.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::TransportError;

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
        let mut done = 0;
        while done < dst.len() {
            let local = libc::iovec {
                iov_base: dst[done..].as_mut_ptr().cast(),
                iov_len: dst.len() - done,
            };
            let remote = libc::iovec {
                iov_base: (addr as usize + done) as *mut libc::c_void,
                iov_len: dst.len() - done,
            };
            // SAFETY: `local` describes memory we own exclusively (`dst`);
            // the kernel checks the remote range against the peer's mappings
            // and fails with EFAULT instead of touching anything else.
            let n = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
            if n <= 0 {
                let err = std::io::Error::last_os_error();
                return Err(match err.raw_os_error() {
                    Some(libc::EPERM | libc::EACCES | libc::ENOSYS) | None => {
                        TransportError::Unsupported {
                            peer: self.peer,
                            what: "reading the peer's memory (process_vm_readv)",
                            reason: err.to_string(),
                        }
                    }
                    Some(libc::ESRCH) => TransportError::PeerGone { peer: self.peer },
                    Some(_) => TransportError::Malformed {
                        peer: self.peer,
                        detail: format!(
                            "{} bytes at {addr:#x} are not readable in its process: {err}",
                            dst.len()
                        ),
                    },
                });
            }
            done += n as usize;
        }
        Ok(())
    }
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
    fn reads_own_memory_and_reports_bad_addresses() {
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
    }

    #[test]
    fn an_exited_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let watched = PeerProcess::new(1, child.id() as libc::pid_t);
        child.wait().unwrap();
        assert!(!watched.alive());
    }
}
