/*
 * A thin layer over libibverbs for the verbs transport.
 *
 * ibv_post_send, ibv_post_srq_recv and ibv_poll_cq are static inline
 * functions of <infiniband/verbs.h> that call through the provider's
 * operation table, and the work-request and completion structures are large
 * unions. Compiling these few calls against the real header keeps their
 * layouts right on every rdma-core version; Rust sees only the flat
 * structures below (mirrored in ffi.rs).
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <infiniband/verbs.h>

/* What the transport needs to know about the opened port. */
struct weft_port {
	char device[64];
	uint32_t port;
	uint32_t lid;
	uint32_t gid_index;
	uint32_t is_ethernet;
	uint32_t active_mtu;
	uint32_t max_qp_wr;
	uint32_t max_srq_wr;
	uint32_t max_sge;
	uint32_t max_rd_atomic;
	uint8_t gid[16];
};

/* An open device: context, protection domain, one send and one receive
 * completion queue (both reporting to one non-blocking completion channel,
 * so that a waiter can sleep until something completes), and one shared
 * receive queue. */
struct weft_dev {
	struct ibv_context *ctx;
	struct ibv_pd *pd;
	struct ibv_comp_channel *channel;
	struct ibv_cq *send_cq;
	struct ibv_cq *recv_cq;
	struct ibv_srq *srq;
	struct weft_port port;
};

/* One work request with at most one scatter/gather element. */
struct weft_wr {
	uint64_t wr_id;
	uint64_t local_addr;
	uint64_t remote_addr;
	uint64_t compare_add;
	uint64_t swap;
	uint32_t length;
	uint32_t lkey;
	uint32_t rkey;
	uint32_t opcode; /* 0 write, 1 read, 2 send, 3 fetch-add, 4 compare-swap,
			  * 5 send with immediate data */
	uint32_t flags;  /* 1 signaled, 2 inline */
	uint32_t imm;    /* the immediate data of opcode 5, in host order */
};

/* One work completion. */
struct weft_wc {
	uint64_t wr_id;
	uint32_t status;
	uint32_t byte_len;
	uint32_t qp_num;
	uint32_t with_imm; /* 1 if the message carried immediate data */
	uint32_t imm;      /* that data, in host order */
};

static void say(char *err, size_t len, const char *what, int e)
{
	snprintf(err, len, "%s: %s", what, strerror(e ? e : EIO));
}

static int gid_is_zero(const union ibv_gid *g)
{
	static const uint8_t zero[16];
	return memcmp(g->raw, zero, 16) == 0;
}

/* Picks the GID to use on a RoCE port: `want` when not negative, else the
 * first RoCE v2 GID that maps an IPv4 address, else the first non-zero one. */
static int pick_gid(struct ibv_context *ctx, uint8_t port, int len, int want,
		    union ibv_gid *out, uint32_t *index)
{
	int first = -1, i;
	if (want >= 0) {
		if (want >= len || ibv_query_gid(ctx, port, want, out) || gid_is_zero(out))
			return -1;
		*index = (uint32_t)want;
		return 0;
	}
	for (i = 0; i < len; i++) {
		union ibv_gid g;
		if (ibv_query_gid(ctx, port, i, &g) || gid_is_zero(&g))
			continue;
		if (first < 0)
			first = i;
		/* ::ffff:a.b.c.d */
		if (g.raw[10] == 0xff && g.raw[11] == 0xff &&
		    memcmp(g.raw, "\0\0\0\0\0\0\0\0\0\0", 10) == 0) {
			*out = g;
			*index = (uint32_t)i;
			return 0;
		}
	}
	if (first < 0 || ibv_query_gid(ctx, port, first, out))
		return -1;
	*index = (uint32_t)first;
	return 0;
}

/* Opens `name` (or, when NULL, the first device with an active port), its
 * first active port, and allocates the protection domain, completion queues
 * and a shared receive queue of `srq_depth` entries. */
struct weft_dev *weft_open(const char *name, int gid_index, uint32_t cq_depth,
			   uint32_t srq_depth, char *err, size_t errlen)
{
	int n = 0, i;
	struct ibv_device **list = ibv_get_device_list(&n);
	struct weft_dev *d = NULL;
	if (!list) {
		if (errno == ENOSYS)
			snprintf(err, errlen, "no RDMA device is present (the kernel's RDMA "
					      "stack, ib_uverbs, is not loaded)");
		else
			say(err, errlen, "ibv_get_device_list", errno);
		return NULL;
	}
	if (n == 0) {
		snprintf(err, errlen, "no RDMA device is present");
		ibv_free_device_list(list);
		return NULL;
	}
	d = calloc(1, sizeof *d);
	if (!d) {
		say(err, errlen, "calloc", ENOMEM);
		ibv_free_device_list(list);
		return NULL;
	}
	err[0] = 0;
	for (i = 0; i < n && !d->ctx; i++) {
		const char *dn = ibv_get_device_name(list[i]);
		struct ibv_device_attr da;
		uint8_t p;
		if (name && strcmp(name, dn) != 0)
			continue;
		d->ctx = ibv_open_device(list[i]);
		if (!d->ctx) {
			snprintf(err, errlen, "cannot open device %s: %s", dn, strerror(errno));
			continue;
		}
		if (ibv_query_device(d->ctx, &da)) {
			snprintf(err, errlen, "cannot query device %s", dn);
			ibv_close_device(d->ctx);
			d->ctx = NULL;
			continue;
		}
		for (p = 1; p <= da.phys_port_cnt; p++) {
			struct ibv_port_attr pa;
			union ibv_gid gid;
			uint32_t gi = 0;
			if (ibv_query_port(d->ctx, p, &pa) || pa.state != IBV_PORT_ACTIVE)
				continue;
			memset(&gid, 0, sizeof gid);
			if (pa.link_layer == IBV_LINK_LAYER_ETHERNET || gid_index >= 0) {
				if (pick_gid(d->ctx, p, pa.gid_tbl_len, gid_index, &gid, &gi)) {
					snprintf(err, errlen, "device %s port %u has no usable GID%s", dn,
						 p, gid_index >= 0 ? " at the index asked for" : "");
					continue;
				}
			}
			snprintf(d->port.device, sizeof d->port.device, "%s", dn);
			d->port.port = p;
			d->port.lid = pa.lid;
			d->port.gid_index = gi;
			d->port.is_ethernet = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
			d->port.active_mtu = pa.active_mtu;
			d->port.max_qp_wr = (uint32_t)da.max_qp_wr;
			d->port.max_srq_wr = (uint32_t)da.max_srq_wr;
			d->port.max_sge = (uint32_t)da.max_sge;
			d->port.max_rd_atomic = (uint32_t)(da.max_qp_rd_atom < da.max_qp_init_rd_atom
								   ? da.max_qp_rd_atom
								   : da.max_qp_init_rd_atom);
			memcpy(d->port.gid, gid.raw, 16);
			break;
		}
		if (!d->port.port) {
			if (!err[0])
				snprintf(err, errlen, "device %s has no active port", dn);
			ibv_close_device(d->ctx);
			d->ctx = NULL;
		}
	}
	ibv_free_device_list(list);
	if (!d->ctx) {
		if (!err[0])
			snprintf(err, errlen, "no RDMA device is named %s", name ? name : "(any)");
		free(d);
		return NULL;
	}
	d->pd = ibv_alloc_pd(d->ctx);
	if (!d->pd) {
		say(err, errlen, "ibv_alloc_pd", errno);
		goto fail;
	}
	d->channel = ibv_create_comp_channel(d->ctx);
	if (!d->channel) {
		say(err, errlen, "ibv_create_comp_channel", errno);
		goto fail;
	}
	{
		int fl = fcntl(d->channel->fd, F_GETFL);
		if (fl < 0 || fcntl(d->channel->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
			say(err, errlen, "fcntl on the completion channel", errno);
			goto fail;
		}
	}
	d->send_cq = ibv_create_cq(d->ctx, (int)cq_depth, NULL, d->channel, 0);
	d->recv_cq = ibv_create_cq(d->ctx, (int)cq_depth, NULL, d->channel, 0);
	if (!d->send_cq || !d->recv_cq) {
		say(err, errlen, "ibv_create_cq", errno);
		goto fail;
	}
	{
		struct ibv_srq_init_attr sa;
		memset(&sa, 0, sizeof sa);
		sa.attr.max_wr = srq_depth;
		sa.attr.max_sge = 1;
		d->srq = ibv_create_srq(d->pd, &sa);
		if (!d->srq) {
			say(err, errlen, "ibv_create_srq", errno);
			goto fail;
		}
	}
	return d;
fail:
	if (d->srq)
		ibv_destroy_srq(d->srq);
	if (d->send_cq)
		ibv_destroy_cq(d->send_cq);
	if (d->recv_cq)
		ibv_destroy_cq(d->recv_cq);
	if (d->channel)
		ibv_destroy_comp_channel(d->channel);
	if (d->pd)
		ibv_dealloc_pd(d->pd);
	ibv_close_device(d->ctx);
	free(d);
	return NULL;
}

const struct weft_port *weft_port_of(const struct weft_dev *d)
{
	return &d->port;
}

/* The completion channel's file descriptor: readable once a completion
 * queue armed by weft_arm has a new completion. */
int weft_event_fd(const struct weft_dev *d)
{
	return d->channel->fd;
}

/* Takes and acknowledges the events the channel holds (without blocking),
 * then asks both completion queues for an event at their next completion.
 * A completion that arrived before this call raises no event: the caller
 * polls the queues once more before it sleeps on the channel. */
int weft_arm(struct weft_dev *d)
{
	struct ibv_cq *cq;
	void *cq_ctx;
	unsigned int send_events = 0, recv_events = 0;
	while (ibv_get_cq_event(d->channel, &cq, &cq_ctx) == 0) {
		if (cq == d->send_cq)
			send_events++;
		else
			recv_events++;
	}
	if (send_events)
		ibv_ack_cq_events(d->send_cq, send_events);
	if (recv_events)
		ibv_ack_cq_events(d->recv_cq, recv_events);
	if (ibv_req_notify_cq(d->send_cq, 0) || ibv_req_notify_cq(d->recv_cq, 0))
		return errno ? errno : EIO;
	return 0;
}

void weft_close(struct weft_dev *d)
{
	struct ibv_cq *cq;
	void *cq_ctx;
	/* Every event must be acknowledged before its queue is destroyed. */
	while (ibv_get_cq_event(d->channel, &cq, &cq_ctx) == 0)
		ibv_ack_cq_events(cq, 1);
	ibv_destroy_srq(d->srq);
	ibv_destroy_cq(d->send_cq);
	ibv_destroy_cq(d->recv_cq);
	ibv_destroy_comp_channel(d->channel);
	ibv_dealloc_pd(d->pd);
	ibv_close_device(d->ctx);
	free(d);
}

/* Registers `len` bytes at `addr` for local writes, remote reads and writes
 * and remote atomics. */
struct ibv_mr *weft_reg(struct weft_dev *d, void *addr, size_t len, uint32_t *lkey,
			uint32_t *rkey, int *error)
{
	struct ibv_mr *mr = ibv_reg_mr(d->pd, addr, len,
				       IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
					       IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC);
	if (!mr) {
		*error = errno ? errno : EIO;
		return NULL;
	}
	*lkey = mr->lkey;
	*rkey = mr->rkey;
	return mr;
}

int weft_dereg(struct ibv_mr *mr)
{
	return ibv_dereg_mr(mr);
}

/* Creates a reliable-connected queue pair on the shared queues, moves it to
 * INIT, and returns it with its number and inline capacity. */
struct ibv_qp *weft_qp_create(struct weft_dev *d, uint32_t max_send_wr, uint32_t max_inline,
			      uint32_t *qp_num, uint32_t *inline_cap, int *error)
{
	struct ibv_qp_init_attr ia;
	struct ibv_qp_attr a;
	struct ibv_qp *qp;
	memset(&ia, 0, sizeof ia);
	ia.send_cq = d->send_cq;
	ia.recv_cq = d->recv_cq;
	ia.srq = d->srq;
	ia.qp_type = IBV_QPT_RC;
	ia.sq_sig_all = 0;
	ia.cap.max_send_wr = max_send_wr;
	ia.cap.max_send_sge = 1;
	ia.cap.max_inline_data = max_inline;
	qp = ibv_create_qp(d->pd, &ia);
	if (!qp && max_inline) {
		/* Some devices take no inline data at all. */
		ia.cap.max_inline_data = 0;
		qp = ibv_create_qp(d->pd, &ia);
	}
	if (!qp) {
		*error = errno ? errno : EIO;
		return NULL;
	}
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_INIT;
	a.pkey_index = 0;
	a.port_num = (uint8_t)d->port.port;
	a.qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE |
			    IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_ATOMIC;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT |
					  IBV_QP_ACCESS_FLAGS)) {
		*error = errno ? errno : EIO;
		ibv_destroy_qp(qp);
		return NULL;
	}
	*qp_num = qp->qp_num;
	*inline_cap = ia.cap.max_inline_data;
	return qp;
}

/* Connects `qp` to the remote queue pair (number, packet sequence, LID or
 * GID) and moves it through RTR to RTS. `timeout` and `retry` bound how long
 * a lost peer is retried before the work request fails. */
int weft_qp_connect(struct weft_dev *d, struct ibv_qp *qp, uint32_t remote_qpn,
		    uint32_t remote_psn, uint32_t local_psn, uint32_t remote_lid,
		    const uint8_t *remote_gid, uint32_t max_rd_atomic, uint32_t timeout,
		    uint32_t retry)
{
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = (enum ibv_mtu)d->port.active_mtu;
	a.dest_qp_num = remote_qpn;
	a.rq_psn = remote_psn;
	a.max_dest_rd_atomic = (uint8_t)max_rd_atomic;
	a.min_rnr_timer = 12;
	a.ah_attr.port_num = (uint8_t)d->port.port;
	a.ah_attr.dlid = (uint16_t)remote_lid;
	if (d->port.is_ethernet) {
		a.ah_attr.is_global = 1;
		memcpy(a.ah_attr.grh.dgid.raw, remote_gid, 16);
		a.ah_attr.grh.sgid_index = (uint8_t)d->port.gid_index;
		a.ah_attr.grh.hop_limit = 64;
	}
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
					  IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC |
					  IBV_QP_MIN_RNR_TIMER))
		return errno ? errno : EIO;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_RTS;
	a.sq_psn = local_psn;
	a.timeout = (uint8_t)timeout;
	a.retry_cnt = (uint8_t)retry;
	a.rnr_retry = 7;
	a.max_rd_atomic = (uint8_t)max_rd_atomic;
	if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_SQ_PSN | IBV_QP_TIMEOUT |
					  IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
					  IBV_QP_MAX_QP_RD_ATOMIC))
		return errno ? errno : EIO;
	return 0;
}

/* Moves `qp` to the error state, which flushes its outstanding requests. */
int weft_qp_error(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;
	memset(&a, 0, sizeof a);
	a.qp_state = IBV_QPS_ERR;
	return ibv_modify_qp(qp, &a, IBV_QP_STATE) ? (errno ? errno : EIO) : 0;
}

int weft_qp_destroy(struct ibv_qp *qp)
{
	return ibv_destroy_qp(qp);
}

/* Posts one work request; returns 0 or an errno value. */
int weft_post(struct ibv_qp *qp, const struct weft_wr *w)
{
	struct ibv_sge sge;
	struct ibv_send_wr wr, *bad = NULL;
	memset(&wr, 0, sizeof wr);
	sge.addr = w->local_addr;
	sge.length = w->length;
	sge.lkey = w->lkey;
	wr.wr_id = w->wr_id;
	wr.sg_list = &sge;
	wr.num_sge = w->length ? 1 : 0;
	wr.send_flags = ((w->flags & 1) ? IBV_SEND_SIGNALED : 0) |
			((w->flags & 2) ? IBV_SEND_INLINE : 0);
	switch (w->opcode) {
	case 0:
		wr.opcode = IBV_WR_RDMA_WRITE;
		wr.wr.rdma.remote_addr = w->remote_addr;
		wr.wr.rdma.rkey = w->rkey;
		break;
	case 1:
		wr.opcode = IBV_WR_RDMA_READ;
		wr.wr.rdma.remote_addr = w->remote_addr;
		wr.wr.rdma.rkey = w->rkey;
		break;
	case 2:
		wr.opcode = IBV_WR_SEND;
		break;
	case 5:
		wr.opcode = IBV_WR_SEND_WITH_IMM;
		wr.imm_data = htobe32(w->imm);
		break;
	case 3:
		wr.opcode = IBV_WR_ATOMIC_FETCH_AND_ADD;
		wr.wr.atomic.remote_addr = w->remote_addr;
		wr.wr.atomic.rkey = w->rkey;
		wr.wr.atomic.compare_add = w->compare_add;
		break;
	case 4:
		wr.opcode = IBV_WR_ATOMIC_CMP_AND_SWP;
		wr.wr.atomic.remote_addr = w->remote_addr;
		wr.wr.atomic.rkey = w->rkey;
		wr.wr.atomic.compare_add = w->compare_add;
		wr.wr.atomic.swap = w->swap;
		break;
	default:
		return EINVAL;
	}
	return ibv_post_send(qp, &wr, &bad);
}

/* Posts one receive buffer to the shared receive queue. */
int weft_post_recv(struct weft_dev *d, uint64_t wr_id, uint64_t addr, uint32_t len,
		   uint32_t lkey)
{
	struct ibv_sge sge;
	struct ibv_recv_wr wr, *bad = NULL;
	sge.addr = addr;
	sge.length = len;
	sge.lkey = lkey;
	memset(&wr, 0, sizeof wr);
	wr.wr_id = wr_id;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	return ibv_post_srq_recv(d->srq, &wr, &bad);
}

/* Polls up to `n` completions of the send (recv = 0) or receive queue. */
int weft_poll(struct weft_dev *d, int recv, struct weft_wc *out, int n)
{
	struct ibv_wc wc[32];
	int got, i;
	if (n > 32)
		n = 32;
	got = ibv_poll_cq(recv ? d->recv_cq : d->send_cq, n, wc);
	for (i = 0; i < got; i++) {
		out[i].wr_id = wc[i].wr_id;
		out[i].status = wc[i].status;
		out[i].byte_len = wc[i].byte_len;
		out[i].qp_num = wc[i].qp_num;
		out[i].with_imm = (wc[i].wc_flags & IBV_WC_WITH_IMM) ? 1 : 0;
		out[i].imm = out[i].with_imm ? be32toh(wc[i].imm_data) : 0;
	}
	return got;
}

const char *weft_status_str(uint32_t status)
{
	return ibv_wc_status_str((enum ibv_wc_status)status);
}
