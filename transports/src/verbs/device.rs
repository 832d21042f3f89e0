//! Safe owners of the verbs objects the transport uses: the open device (with
//! its protection domain, completion queues and shared receive queue),
//! memory regions and queue pairs. Each is released when dropped; regions and
//! queue pairs keep the device alive.

use std::ffi::{c_char, c_int, CStr, CString};
use std::io;
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::sync::Arc;

use super::ffi;
pub(super) use super::ffi::{Completion, WorkRequest};

/// An open device port with its protection domain, one send and one receive
/// completion queue, and a shared receive queue.
pub(super) struct Device {
    raw: NonNull<ffi::RawDevice>,
    port: ffi::Port,
}

// SAFETY: libibverbs objects may be used from any thread; the calls made
// through `Device` (registration, posting receives, polling) are thread-safe
// in libibverbs, and the transport serializes its own bookkeeping.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

/// How a port is addressed and what it can do.
#[derive(Clone, Copy, Debug)]
pub(super) struct PortInfo {
    pub lid: u32,
    pub gid: [u8; 16],
    pub max_qp_wr: u32,
    pub max_srq_wr: u32,
}

impl Device {
    /// Opens the device `name` (the first with an active port when `None`)
    /// with completion queues of `cq_depth` and a shared receive queue of
    /// `srq_depth` entries. The error says why no device could be used.
    pub(super) fn open(
        name: Option<&str>,
        gid_index: Option<u32>,
        cq_depth: u32,
        srq_depth: u32,
    ) -> Result<Arc<Device>, String> {
        let cname = match name {
            Some(n) => Some(CString::new(n).map_err(|_| format!("bad device name {n:?}"))?),
            None => None,
        };
        let mut err = [0 as c_char; 256];
        let gid = gid_index.map_or(-1, |g| g.min(i32::MAX as u32) as c_int);
        // SAFETY: `cname` is a NUL-terminated string or null, and `err` is a
        // writable buffer of the length passed; the shim writes at most that
        // many bytes, NUL-terminated.
        let raw = unsafe {
            ffi::weft_open(
                cname.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                gid,
                cq_depth,
                srq_depth,
                err.as_mut_ptr(),
                err.len(),
            )
        };
        match NonNull::new(raw) {
            Some(raw) => {
                // SAFETY: the device is open, so its port record is valid
                // and never changes.
                let port = unsafe { *ffi::weft_port_of(raw.as_ptr()) };
                Ok(Arc::new(Device { raw, port }))
            }
            None => {
                // SAFETY: the shim NUL-terminated `err`.
                let msg = unsafe { CStr::from_ptr(err.as_ptr()) };
                Err(msg.to_string_lossy().into_owned())
            }
        }
    }

    /// The device's name, e.g. `mlx5_0` or `rxe0`.
    pub(super) fn name(&self) -> String {
        // SAFETY: the shim NUL-terminates the name inside the 64-byte array.
        unsafe { CStr::from_ptr(self.port.device.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// The port's number on the device.
    pub(super) fn port_number(&self) -> u32 {
        self.port.port
    }

    /// How the port is addressed and its limits.
    pub(super) fn info(&self) -> PortInfo {
        PortInfo {
            lid: self.port.lid,
            gid: self.port.gid,
            max_qp_wr: self.port.max_qp_wr,
            max_srq_wr: self.port.max_srq_wr,
        }
    }

    /// Registers `len` bytes at `ptr` for local writes and remote reads,
    /// writes and atomics.
    ///
    /// # Safety
    /// The bytes must stay allocated while the region lives, and the caller
    /// must accept that peers holding the region's key write into them at any
    /// time.
    pub(super) unsafe fn register(
        self: &Arc<Self>,
        ptr: *mut u8,
        len: usize,
    ) -> io::Result<MemoryRegion> {
        let (mut lkey, mut rkey, mut error) = (0u32, 0u32, 0 as c_int);
        // SAFETY: the device is open; the caller vouches for the memory.
        let raw = unsafe {
            ffi::weft_reg(
                self.raw.as_ptr(),
                ptr.cast(),
                len,
                &mut lkey,
                &mut rkey,
                &mut error,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| io::Error::from_raw_os_error(error))?;
        Ok(MemoryRegion {
            raw,
            addr: ptr as u64,
            len,
            lkey,
            rkey,
            _device: self.clone(),
        })
    }

    /// Creates a reliable-connected queue pair in the INIT state, on the
    /// device's completion queues and shared receive queue.
    pub(super) fn queue_pair(
        self: &Arc<Self>,
        max_send_wr: u32,
        max_inline: u32,
    ) -> io::Result<QueuePair> {
        let (mut qpn, mut inline_cap, mut error) = (0u32, 0u32, 0 as c_int);
        // SAFETY: the device is open and the out-pointers are valid.
        let raw = unsafe {
            ffi::weft_qp_create(
                self.raw.as_ptr(),
                max_send_wr,
                max_inline,
                &mut qpn,
                &mut inline_cap,
                &mut error,
            )
        };
        let raw = NonNull::new(raw).ok_or_else(|| io::Error::from_raw_os_error(error))?;
        Ok(QueuePair {
            raw,
            qpn,
            inline_cap,
            device: self.clone(),
        })
    }

    /// Posts a receive buffer to the shared receive queue.
    ///
    /// # Safety
    /// `addr..addr + len` must lie in a region registered under `lkey` and
    /// stay untouched by the program until its completion is polled.
    pub(super) unsafe fn post_recv(
        &self,
        wr_id: u64,
        addr: u64,
        len: u32,
        lkey: u32,
    ) -> io::Result<()> {
        // SAFETY: the device is open; the caller vouches for the buffer.
        let rc = unsafe { ffi::weft_post_recv(self.raw.as_ptr(), wr_id, addr, len, lkey) };
        errno(rc)
    }

    /// Polls up to `out.len()` completions of the send queues (or, with
    /// `recv`, of the shared receive queue); returns how many were written.
    pub(super) fn poll(&self, recv: bool, out: &mut [Completion]) -> io::Result<usize> {
        let n = out.len().min(32) as c_int;
        // SAFETY: the device is open and `out` has room for `n` entries.
        let got = unsafe { ffi::weft_poll(self.raw.as_ptr(), recv as c_int, out.as_mut_ptr(), n) };
        usize::try_from(got).map_err(|_| io::Error::other("ibv_poll_cq failed"))
    }

    /// The completion channel's descriptor: readable once a queue armed
    /// by [`Device::arm`] has a new completion.
    pub(super) fn event_fd(&self) -> RawFd {
        // SAFETY: the device is open; this reads one field.
        unsafe { ffi::weft_event_fd(self.raw.as_ptr()) }
    }

    /// Acknowledges the events seen so far and asks both completion queues
    /// for an event at their next completion (one that arrived before is
    /// not announced: poll once more before sleeping).
    pub(super) fn arm(&self) -> io::Result<()> {
        // SAFETY: the device is open; the channel is non-blocking.
        errno(unsafe { ffi::weft_arm(self.raw.as_ptr()) })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every region and queue pair holds an `Arc` of the device,
        // so none is left when it drops.
        unsafe { ffi::weft_close(self.raw.as_ptr()) }
    }
}

/// The text libibverbs gives for a completion status.
pub(super) fn status_text(status: u32) -> String {
    // SAFETY: ibv_wc_status_str returns a static NUL-terminated string for
    // every value, known or not.
    unsafe { CStr::from_ptr(ffi::weft_status_str(status)) }
        .to_string_lossy()
        .into_owned()
}

fn errno(rc: c_int) -> io::Result<()> {
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Registered memory: its local key for work requests and the remote key
/// peers use to reach it.
pub(super) struct MemoryRegion {
    raw: NonNull<ffi::RawMr>,
    pub addr: u64,
    pub len: usize,
    pub lkey: u32,
    pub rkey: u32,
    _device: Arc<Device>,
}

// SAFETY: a memory region is a kernel object handle; deregistering it from
// another thread is allowed.
unsafe impl Send for MemoryRegion {}
// SAFETY: shared access only reads the keys.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// Whether `ptr..ptr + len` lies inside the region.
    pub(super) fn covers(&self, ptr: u64, len: usize) -> bool {
        ptr >= self.addr && ptr - self.addr + len as u64 <= self.len as u64
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: the region was registered and is deregistered once. The
        // transport drops a region only when no work request uses it.
        unsafe { ffi::weft_dereg(self.raw.as_ptr()) };
    }
}

/// Where a queue pair connects to.
#[derive(Clone, Copy, Debug)]
pub(super) struct Endpoint {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u32,
    pub gid: [u8; 16],
}

/// A reliable-connected queue pair.
pub(super) struct QueuePair {
    raw: NonNull<ffi::RawQp>,
    pub qpn: u32,
    pub inline_cap: u32,
    device: Arc<Device>,
}

// SAFETY: posting to a queue pair is thread-safe in libibverbs; the
// transport also posts under its own lock.
unsafe impl Send for QueuePair {}
// SAFETY: as above.
unsafe impl Sync for QueuePair {}

/// Transport retries before a work request fails: 7 tries of the local
/// ACK timeout (about 2 s in all with the default, [`DEFAULT_ACK_TIMEOUT`]).
const RETRY_COUNT: u32 = 7;

impl QueuePair {
    /// Connects to `remote`, sending from packet sequence number `psn`,
    /// with a local ACK timeout of 4.096 µs * 2^`ack_timeout` per try.
    pub(super) fn connect(&self, remote: &Endpoint, psn: u32, ack_timeout: u8) -> io::Result<()> {
        let rd_atomic = self.device.port.max_rd_atomic.clamp(1, 16);
        // SAFETY: the queue pair and device are live; `remote.gid` is 16 bytes.
        let rc = unsafe {
            ffi::weft_qp_connect(
                self.device.raw.as_ptr(),
                self.raw.as_ptr(),
                remote.qpn,
                remote.psn,
                psn,
                remote.lid,
                remote.gid.as_ptr(),
                rd_atomic,
                u32::from(ack_timeout),
                RETRY_COUNT,
            )
        };
        errno(rc)
    }

    /// Moves the queue pair to the error state: every request in flight
    /// completes at once with a flush error.
    pub(super) fn break_off(&self) {
        // SAFETY: the queue pair is live; the state change is the whole call.
        unsafe { ffi::weft_qp_error(self.raw.as_ptr()) };
    }

    /// Posts one work request.
    ///
    /// # Safety
    /// Unless it is inline, the request's local bytes must lie in a region
    /// registered under its `lkey` and stay valid (and, for reads and
    /// atomics, untouched) until its completion, or a later one on this
    /// queue pair, is polled.
    pub(super) unsafe fn post(&self, wr: &WorkRequest) -> io::Result<()> {
        // SAFETY: the queue pair is live; the caller vouches for the memory.
        errno(unsafe { ffi::weft_post(self.raw.as_ptr(), wr) })
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: the queue pair is destroyed once, after the transport
        // stopped posting to it.
        unsafe { ffi::weft_qp_destroy(self.raw.as_ptr()) };
    }
}

pub(super) use ffi::{
    FLAG_INLINE, FLAG_SIGNALED, OP_COMPARE_SWAP, OP_FETCH_ADD, OP_READ, OP_SEND, OP_SEND_IMM,
    OP_WRITE, WC_RETRY_EXCEEDED, WC_SUCCESS,
};
