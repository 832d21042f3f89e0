//! The transport's own registered memory, one anonymous mapping: the credit
//! counters peers write into, the counters this PE writes from, the receive
//! buffers of the shared receive queue and the bounce slots that stage
//! small puts, gets, sends and atomic results.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::device::{Device, MemoryRegion};

/// Sizes of the parts of the area.
#[derive(Clone, Copy, Debug)]
pub(super) struct Layout {
    pub peers: usize,
    pub recv_buffers: usize,
    pub recv_size: usize,
    pub bounce_slots: usize,
    pub bounce_size: usize,
}

impl Layout {
    fn credits_in(&self) -> usize {
        0
    }
    fn credits_out(&self) -> usize {
        self.peers * 8
    }
    fn recv(&self) -> usize {
        (self.peers * 16).next_multiple_of(4096)
    }
    fn bounce(&self) -> usize {
        self.recv() + self.recv_buffers * self.recv_size
    }
    fn len(&self) -> usize {
        self.bounce() + self.bounce_slots * self.bounce_size
    }
}

/// The mapping and its registration.
pub(super) struct Area {
    layout: Layout,
    /// Declared before `ptr`'s unmapping in `drop`, so deregistered first.
    mr: Option<MemoryRegion>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the area is plain memory; the transport hands out disjoint parts
// (a receive buffer or bounce slot belongs to one owner at a time) and the
// credit counters are accessed atomically.
unsafe impl Send for Area {}
// SAFETY: as above.
unsafe impl Sync for Area {}

impl Area {
    /// Maps and registers an area of `layout`.
    pub(super) fn new(device: &Arc<Device>, layout: Layout) -> io::Result<Area> {
        let len = layout.len();
        // SAFETY: an anonymous private mapping of `len` bytes; no file, no
        // fixed address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut area = Area {
            layout,
            mr: None,
            ptr: ptr.cast(),
            len,
        };
        // SAFETY: the mapping lives until `drop`, which deregisters first;
        // peers write only the credit counters, which are read atomically.
        area.mr = Some(unsafe { device.register(area.ptr, len)? });
        Ok(area)
    }

    fn mr(&self) -> &MemoryRegion {
        self.mr.as_ref().expect("registered in new")
    }

    /// The area's registration.
    pub(super) fn keys(&self) -> (u64, u32, u32) {
        let mr = self.mr();
        (mr.addr, mr.lkey, mr.rkey)
    }

    /// Messages from this PE that `peer` has consumed, as `peer` last wrote.
    pub(super) fn credit_in(&self, peer: usize) -> u64 {
        assert!(peer < self.layout.peers);
        // SAFETY: the counter lies inside the mapping and is 8-byte aligned;
        // the NIC writes it whole.
        unsafe { AtomicU64::from_ptr(self.ptr.add(self.layout.credits_in() + peer * 8).cast()) }
            .load(Ordering::Acquire)
    }

    /// Stores `count` in the outgoing counter for `peer` and returns the
    /// counter's address, the source of the write that reports it.
    pub(super) fn set_credit_out(&self, peer: usize, count: u64) -> u64 {
        assert!(peer < self.layout.peers);
        let off = self.layout.credits_out() + peer * 8;
        // SAFETY: as in `credit_in`; the NIC only reads this counter.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }.store(count, Ordering::Release);
        self.ptr as u64 + off as u64
    }

    /// Remote offset of the counter that PE `writer` updates in a peer's area.
    pub(super) fn credit_slot(writer: usize) -> u64 {
        writer as u64 * 8
    }

    /// Address of receive buffer `i`.
    pub(super) fn recv_buffer(&self, i: usize) -> u64 {
        assert!(i < self.layout.recv_buffers);
        self.ptr as u64 + (self.layout.recv() + i * self.layout.recv_size) as u64
    }

    /// The first `len` bytes of receive buffer `i`, filled by the device.
    ///
    /// # Safety
    /// The buffer's completion must have been polled and the buffer not yet
    /// posted again.
    pub(super) unsafe fn received(&self, i: usize, len: usize) -> &[u8] {
        assert!(len <= self.layout.recv_size);
        // SAFETY: inside the mapping; the caller owns the buffer now.
        unsafe { std::slice::from_raw_parts(self.recv_buffer(i) as *const u8, len) }
    }

    /// Address of bounce slot `i`.
    pub(super) fn slot(&self, i: usize) -> *mut u8 {
        assert!(i < self.layout.bounce_slots);
        // SAFETY: inside the mapping.
        unsafe {
            self.ptr
                .add(self.layout.bounce() + i * self.layout.bounce_size)
        }
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        self.mr = None;
        // SAFETY: the mapping made in `new`, unmapped once, after its
        // registration is gone.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
