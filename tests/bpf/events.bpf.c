// SPDX-License-Identifier: GPL-2.0
/* Test object for event streams (tests/test_ringbuf.py, test_perfbuf.py,
 * test_user_ringbuf.py).  Triggered by the test's own syscalls, filtered to
 * its pid:
 *   getppid()  -> emit cfg.count records with bpf_loop, into the ring or perf
 *                 buffer that cfg.mode selects;
 *   getpgid()  -> drain the user ring buffer into the `out` map. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "pybpf_common.h"

enum { MODE_RB = 0, MODE_RB2 = 1, MODE_PERF = 2, MODE_MIXED = 3, MODE_DISCARD = 4 };

struct cfg {
	__u32 count;
	__u32 mode;
	__u64 cookie;
};

struct event {		/* 32 bytes, kind 0 */
	__u64 seq;
	__u32 pid;
	__u32 kind;
	__u64 cookie;
	__u64 square;
};

struct ev_small {		/* 16 bytes, kind 1 */
	__u32 kind;
	__u32 seq;
	__u64 value;
};

struct ev_big {		/* 40 bytes, kind 2 */
	__u32 kind;
	__u32 seq;
	__u64 value;
	char name[24];
};

struct user_req {		/* written by user space into the user ring buffer */
	__u32 idx;
	__u32 flags;
	__u64 value;
};

const volatile __u32 target_pid = 0;

/* Keep the record types in the object's BTF (user space decodes by name). */
struct event *type_event __attribute__((unused));
struct ev_small *type_small __attribute__((unused));
struct ev_big *type_big __attribute__((unused));
struct user_req *type_req __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024);
} rb2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} pb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 16 * 1024);
} urb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drained SEC(".maps");

struct loop_ctx {
	void *ctx;
	__u64 *seq;
	struct cfg *cfg;
	__u32 pid;
};

static long emit_one(__u64 i, struct loop_ctx *lc)
{
	__u64 s = (*lc->seq)++;
	struct event e = {
		.seq = s, .pid = lc->pid, .kind = 0, .cookie = lc->cfg->cookie, .square = s * s,
	};
	void *ring = lc->cfg->mode == MODE_RB2 ? (void *)&rb2 : (void *)&rb;

	switch (lc->cfg->mode) {
	case MODE_DISCARD: {	/* every third record is reserved, then discarded */
		struct event *r = bpf_ringbuf_reserve(&rb, sizeof(*r), 0);

		if (!r) {
			pybpf_count_drop();
			break;
		}
		*r = e;
		if (s % 3 == 2)
			bpf_ringbuf_discard(r, 0);
		else
			bpf_ringbuf_submit(r, 0);
		break;
	}
	case MODE_PERF:
		if (bpf_perf_event_output(lc->ctx, &pb, BPF_F_CURRENT_CPU, &e, sizeof(e)))
			pybpf_count_drop();
		break;
	case MODE_MIXED:
		if (s & 1) {
			struct ev_big b = { .kind = 2, .seq = s, .value = s * 3 };

			__builtin_memcpy(b.name, "big-record-name", 16);
			if (bpf_ringbuf_output(&rb, &b, sizeof(b), 0))
				pybpf_count_drop();
		} else {
			struct ev_small m = { .kind = 1, .seq = s, .value = s * 2 };

			if (bpf_ringbuf_output(&rb, &m, sizeof(m), 0))
				pybpf_count_drop();
		}
		break;
	default:
		if (bpf_ringbuf_output(ring, &e, sizeof(e), 0))
			pybpf_count_drop();
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int emit(void *ctx)
{
	__u32 zero = 0;
	struct loop_ctx lc = { .ctx = ctx };

	lc.pid = bpf_get_current_pid_tgid() >> 32;
	if (lc.pid != target_pid)
		return 0;
	lc.cfg = bpf_map_lookup_elem(&cfg, &zero);
	lc.seq = bpf_map_lookup_elem(&seq, &zero);
	if (!lc.cfg || !lc.seq)
		return 0;
	bpf_loop(lc.cfg->count, emit_one, &lc, 0);
	return 0;
}

static long drain_one(struct bpf_dynptr *dynptr, void *unused)
{
	struct user_req r;
	__u32 zero = 0;
	__u64 *n, *slot;

	if (bpf_dynptr_read(&r, sizeof(r), dynptr, 0, 0))
		return 1;	/* stop draining */
	slot = bpf_map_lookup_elem(&out, &r.idx);
	if (slot)
		*slot = r.value;
	n = bpf_map_lookup_elem(&drained, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int drain(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	bpf_user_ringbuf_drain(&urb, drain_one, NULL, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
