//! Named shared-memory segments: `shm_open` + `mmap`, mode 0600.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::TransportError;

/// A POSIX shared-memory object mapped read-write into this process.
///
/// The creator unlinks it with [`Segment::unlink`] once every peer has mapped
/// it, so that nothing is left in `/dev/shm` if the job dies later; dropping a
/// segment unmaps it and unlinks it if its creator has not done so yet.
pub struct Segment {
    name: String,
    ptr: NonNull<u8>,
    len: usize,
    owner: bool,
    unlinked: AtomicBool,
}

// SAFETY: the mapping is plain shared memory; `Segment` only hands out raw
// pointers to it, and every access through them is the caller's to order.
unsafe impl Send for Segment {}
// SAFETY: as above; the only interior state is an atomic flag.
unsafe impl Sync for Segment {}

fn c_name(name: &str) -> Result<CString, TransportError> {
    if !name.starts_with('/') || name[1..].contains('/') || name.len() > 250 {
        return Err(TransportError::Malformed {
            peer: usize::MAX,
            detail: format!("invalid shared-memory segment name {name:?}"),
        });
    }
    CString::new(name).map_err(|_| TransportError::Malformed {
        peer: usize::MAX,
        detail: format!("segment name {name:?} contains a NUL byte"),
    })
}

impl Segment {
    /// Creates the segment `name` (which must start with `/`) of `len` bytes,
    /// mode 0600, with its memory reserved up front so that running out of
    /// `/dev/shm` is an error here rather than a `SIGBUS` later. Fails if it
    /// exists already.
    pub fn create(name: &str, len: usize) -> Result<Segment, TransportError> {
        let cname = c_name(name)?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let fd = unsafe {
            libc::shm_open(
                cname.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
            )
        };
        if fd < 0 {
            return Err(TransportError::last_os("shm_open", name));
        }
        let result = reserve(fd, len, name).and_then(|()| map(fd, len, name));
        // SAFETY: `fd` is ours and no longer needed once mapped.
        unsafe { libc::close(fd) };
        match result {
            Ok(ptr) => Ok(Segment {
                name: name.to_owned(),
                ptr,
                len,
                owner: true,
                unlinked: AtomicBool::new(false),
            }),
            Err(e) => {
                // SAFETY: `cname` is valid; removing our own half-made object.
                unsafe { libc::shm_unlink(cname.as_ptr()) };
                Err(e)
            }
        }
    }

    /// Maps the existing segment `name`, which must be exactly `len` bytes.
    pub fn open(name: &str, len: usize) -> Result<Segment, TransportError> {
        let cname = c_name(name)?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if fd < 0 {
            return Err(TransportError::last_os("shm_open", name));
        }
        let result = check_size(fd, len, name).and_then(|()| map(fd, len, name));
        // SAFETY: `fd` is ours and no longer needed once mapped.
        unsafe { libc::close(fd) };
        Ok(Segment {
            name: name.to_owned(),
            ptr: result?,
            len,
            owner: false,
            unlinked: AtomicBool::new(true),
        })
    }

    /// Removes the name from `/dev/shm`; the mappings stay valid. Idempotent.
    pub fn unlink(&self) -> Result<(), TransportError> {
        if self.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let cname = c_name(&self.name)?;
        // SAFETY: `cname` is a valid NUL-terminated string.
        if unsafe { libc::shm_unlink(cname.as_ptr()) } != 0 {
            return Err(TransportError::last_os("shm_unlink", self.name.clone()));
        }
        Ok(())
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// First byte of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never, for a mapped segment).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.owner {
            // Nothing useful can be done with an error while dropping; the name
            // is gone either way or was never ours to remove.
            let _ = self.unlink();
        }
        // SAFETY: `ptr`/`len` describe a mapping made by `map` and not unmapped
        // before; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn reserve(fd: libc::c_int, len: usize, name: &str) -> Result<(), TransportError> {
    let len_off = libc::off_t::try_from(len).map_err(|_| TransportError::Malformed {
        peer: usize::MAX,
        detail: format!("segment size {len} is too large"),
    })?;
    // SAFETY: `fd` is an open shared-memory object.
    if unsafe { libc::ftruncate(fd, len_off) } != 0 {
        return Err(TransportError::last_os("ftruncate", name));
    }
    // SAFETY: as above; posix_fallocate returns the error instead of setting errno.
    let rc = unsafe { libc::posix_fallocate(fd, 0, len_off) };
    if rc != 0 {
        return Err(TransportError::Os {
            call: "posix_fallocate",
            what: format!("{len} bytes for {name} in /dev/shm"),
            source: std::io::Error::from_raw_os_error(rc),
        });
    }
    Ok(())
}

fn check_size(fd: libc::c_int, len: usize, name: &str) -> Result<(), TransportError> {
    // SAFETY: `st` is plain data that fstat fills in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(TransportError::last_os("fstat", name));
    }
    if st.st_size as u64 != len as u64 {
        return Err(TransportError::Malformed {
            peer: usize::MAX,
            detail: format!("segment {name} is {} bytes, expected {len}", st.st_size),
        });
    }
    Ok(())
}

fn map(fd: libc::c_int, len: usize, name: &str) -> Result<NonNull<u8>, TransportError> {
    // SAFETY: a fresh shared mapping of an open descriptor; the kernel picks
    // the address, so no existing memory is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(TransportError::last_os("mmap", name));
    }
    NonNull::new(p.cast()).ok_or_else(|| TransportError::last_os("mmap", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(tag: &str) -> String {
        format!("/weft-test-{tag}-{}", std::process::id())
    }

    #[test]
    fn create_open_share_bytes_and_unlink() {
        let name = unique("share");
        let a = Segment::create(&name, 1 << 16).unwrap();
        let b = Segment::open(&name, 1 << 16).unwrap();
        // SAFETY: both mappings are 64 KiB long and alive.
        unsafe {
            a.as_ptr().add(100).write(42);
            assert_eq!(b.as_ptr().add(100).read(), 42);
        }
        a.unlink().unwrap();
        a.unlink().unwrap();
        assert!(Segment::open(&name, 1 << 16).is_err());
    }

    #[test]
    fn wrong_size_and_bad_names_are_errors() {
        let name = unique("size");
        let _a = Segment::create(&name, 4096).unwrap();
        assert!(Segment::open(&name, 8192).is_err());
        assert!(Segment::create(&name, 4096).is_err(), "exists already");
        assert!(Segment::create("no-slash", 4096).is_err());
        assert!(Segment::create("/a/b", 4096).is_err());
    }

    #[test]
    fn drop_of_creator_removes_the_name() {
        let name = unique("drop");
        drop(Segment::create(&name, 4096).unwrap());
        assert!(Segment::open(&name, 4096).is_err());
    }
}
