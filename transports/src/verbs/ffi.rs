//! Declarations of `shim.c`, the flat C layer over libibverbs. The structures
//! mirror the shim's field for field.

use std::ffi::{c_char, c_int, c_void};

/// `struct weft_dev`: an open device with its queues (opaque).
#[repr(C)]
pub(super) struct RawDevice {
    _private: [u8; 0],
}

/// `struct ibv_mr` (opaque).
#[repr(C)]
pub(super) struct RawMr {
    _private: [u8; 0],
}

/// `struct ibv_qp` (opaque).
#[repr(C)]
pub(super) struct RawQp {
    _private: [u8; 0],
}

/// `struct weft_port`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct Port {
    pub device: [c_char; 64],
    pub port: u32,
    pub lid: u32,
    pub gid_index: u32,
    pub is_ethernet: u32,
    pub active_mtu: u32,
    pub max_qp_wr: u32,
    pub max_srq_wr: u32,
    pub max_sge: u32,
    pub max_rd_atomic: u32,
    pub gid: [u8; 16],
}

/// Work request opcodes of `struct weft_wr`.
pub(super) const OP_WRITE: u32 = 0;
pub(super) const OP_READ: u32 = 1;
pub(super) const OP_SEND: u32 = 2;
pub(super) const OP_FETCH_ADD: u32 = 3;
pub(super) const OP_COMPARE_SWAP: u32 = 4;
pub(super) const OP_SEND_IMM: u32 = 5;

/// Work request flags of `struct weft_wr`.
pub(super) const FLAG_SIGNALED: u32 = 1;
pub(super) const FLAG_INLINE: u32 = 2;

/// `struct weft_wr`: one work request with at most one gather element.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct WorkRequest {
    pub wr_id: u64,
    pub local_addr: u64,
    pub remote_addr: u64,
    pub compare_add: u64,
    pub swap: u64,
    pub length: u32,
    pub lkey: u32,
    pub rkey: u32,
    pub opcode: u32,
    pub flags: u32,
    /// The immediate data of [`OP_SEND_IMM`].
    pub imm: u32,
}

/// `struct weft_wc`: one work completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Completion {
    pub wr_id: u64,
    pub status: u32,
    pub byte_len: u32,
    pub qp_num: u32,
    /// 1 if the message carried immediate data, in `imm`.
    pub with_imm: u32,
    pub imm: u32,
}

/// `IBV_WC_SUCCESS`.
pub(super) const WC_SUCCESS: u32 = 0;
/// `IBV_WC_RNR_RETRY_EXC_ERR` and `IBV_WC_RETRY_EXC_ERR`: the peer did not answer.
pub(super) const WC_RETRY_EXCEEDED: [u32; 2] = [12, 13];

#[link(name = "ibverbs")]
extern "C" {}

extern "C" {
    pub(super) fn weft_open(
        name: *const c_char,
        gid_index: c_int,
        cq_depth: u32,
        srq_depth: u32,
        err: *mut c_char,
        errlen: usize,
    ) -> *mut RawDevice;
    pub(super) fn weft_port_of(d: *const RawDevice) -> *const Port;
    pub(super) fn weft_close(d: *mut RawDevice);
    pub(super) fn weft_event_fd(d: *const RawDevice) -> c_int;
    pub(super) fn weft_arm(d: *mut RawDevice) -> c_int;
    pub(super) fn weft_reg(
        d: *mut RawDevice,
        addr: *mut c_void,
        len: usize,
        lkey: *mut u32,
        rkey: *mut u32,
        error: *mut c_int,
    ) -> *mut RawMr;
    pub(super) fn weft_dereg(mr: *mut RawMr) -> c_int;
    pub(super) fn weft_qp_create(
        d: *mut RawDevice,
        max_send_wr: u32,
        max_inline: u32,
        qp_num: *mut u32,
        inline_cap: *mut u32,
        error: *mut c_int,
    ) -> *mut RawQp;
    #[allow(clippy::too_many_arguments)]
    pub(super) fn weft_qp_connect(
        d: *mut RawDevice,
        qp: *mut RawQp,
        remote_qpn: u32,
        remote_psn: u32,
        local_psn: u32,
        remote_lid: u32,
        remote_gid: *const u8,
        max_rd_atomic: u32,
        timeout: u32,
        retry: u32,
    ) -> c_int;
    pub(super) fn weft_qp_destroy(qp: *mut RawQp) -> c_int;
    pub(super) fn weft_qp_error(qp: *mut RawQp) -> c_int;
    pub(super) fn weft_post(qp: *mut RawQp, wr: *const WorkRequest) -> c_int;
    pub(super) fn weft_post_recv(
        d: *mut RawDevice,
        wr_id: u64,
        addr: u64,
        len: u32,
        lkey: u32,
    ) -> c_int;
    pub(super) fn weft_poll(
        d: *mut RawDevice,
        recv: c_int,
        out: *mut Completion,
        n: c_int,
    ) -> c_int;
    pub(super) fn weft_status_str(status: u32) -> *const c_char;
}
