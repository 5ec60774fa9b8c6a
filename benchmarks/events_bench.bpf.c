// SPDX-License-Identifier: GPL-2.0
/* Event-stream benchmark object (benchmarks/bench_events.py): on each getppid()
 * of the process cfg.pid, emit cfg.count 32-byte events with bpf_loop into
 * the ring buffer `rb` (cfg.mode 0) or the perf buffer `pb` (cfg.mode 1).
 * Every event carries a sequence number so consumers can prove none is lost;
 * failed reservations are counted in pybpf_ringbuf_drops. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "pybpf_common.h"

struct bench_event {
	__u64 seq;
	__u64 a;
	__u64 b;
	__u64 c;
};

struct bench_cfg {
	__u32 count;
	__u32 mode;
	__u32 pid;	/* only this process triggers */
	__u32 pad;
};

struct bench_event *type_bench_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bench_cfg);
} cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seq SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);	/* consumers may resize before load */
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} pb SEC(".maps");

struct loop_ctx {
	void *ctx;
	__u64 *seq;
	__u32 mode;
};

static long emit_one(__u64 i, struct loop_ctx *lc)
{
	__u64 s = (*lc->seq)++;
	struct bench_event *e;

	if (lc->mode == 1) {
		struct bench_event ev = { .seq = s, .a = i, .b = s ^ i, .c = 1 };

		if (bpf_perf_event_output(lc->ctx, &pb, BPF_F_CURRENT_CPU, &ev, sizeof(ev)))
			pybpf_count_drop();
		return 0;
	}
	e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
	if (!e) {
		pybpf_count_drop();
		return 0;
	}
	e->seq = s;
	e->a = i;
	e->b = s ^ i;
	e->c = 1;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int bench_emit(void *ctx)
{
	__u32 zero = 0;
	struct bench_cfg *c;
	struct loop_ctx lc = { .ctx = ctx };

	c = bpf_map_lookup_elem(&cfg, &zero);
	lc.seq = bpf_map_lookup_elem(&seq, &zero);
	if (!c || !lc.seq || (bpf_get_current_pid_tgid() >> 32) != c->pid)
		return 0;
	lc.mode = c->mode;
	bpf_loop(c->count, emit_one, &lc, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
