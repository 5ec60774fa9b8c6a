/* Shared by pybpf's shipped probes: event header and loss accounting. */
#ifndef PYBPF_COMMON_H
#define PYBPF_COMMON_H

#define TASK_COMM_LEN 16

/* Per-CPU count of ring buffer reservations that failed (ring full).
 * pybpf reports it beside the consumer's own count: see pybpf.ringbuf. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pybpf_ringbuf_drops SEC(".maps");

static __always_inline void pybpf_count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&pybpf_ringbuf_drops, &zero);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/* Names the record type of a ring buffer for user space (pybpf run, the
 * shipped tools): a read-only pointer, never dereferenced, whose BTF type says
 * what MAP carries. Costs 8 bytes of .rodata. */
#define PYBPF_EVENT_TYPE(map, type) \
	type *const volatile __pybpf_event__##map = 0

/* Live upgrade, generation guard (pybpf.upgrade). Opt in with
 *	#define PYBPF_GENERATIONS
 * before including this header, and start each program on a hook the kernel
 * cannot update in place (tracepoints, raw tracepoints, uprobes...) with
 *	PYBPF_GUARD(0);
 * During `obj.upgrade(...)` old and new builds are both attached for a moment;
 * the guard lets only one of them work on each event, and one 8-byte store to
 * pybpf_generation (reused by every build) moves the work from old to new.
 *
 * The word: bits 0-30 the active generation, 32-62 the generation whose
 * programs the kernel runs last for an event, bit 63 "two generations
 * attached". While two are attached, the program that runs first for an event
 * records in pybpf_gen_handled (per CPU) whether it worked, and the one that
 * runs last works only if it did not: each event is handled exactly once, the
 * one in flight at the switch included. Do not guard programs on hooks that
 * are updated atomically (XDP, tcx, cgroup...): they need no guard. */
#ifdef PYBPF_GENERATIONS
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, __u64);
} pybpf_generation SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} pybpf_gen_handled SEC(".maps");

/* This build's generation: set by pybpf at upgrade (0 for a first load). */
const volatile __u32 pybpf_gen = 0;

static __always_inline int pybpf_generation_active(void)
{
	__u32 zero = 0, active, last, *handled;
	__u64 *w = bpf_map_lookup_elem(&pybpf_generation, &zero);
	__u64 v;
	int work;

	if (!w)
		return 1;
	v = *(volatile __u64 *)w;
	active = (__u32)v & 0x7fffffff;
	if (!(v >> 63))
		return active == pybpf_gen;
	last = (__u32)(v >> 32) & 0x7fffffff;
	handled = bpf_map_lookup_elem(&pybpf_gen_handled, &zero);
	if (!handled)
		return active == pybpf_gen;
	if (last != pybpf_gen) {
		work = active == pybpf_gen;
		*handled = work;
		return work;
	}
	work = !*handled;
	*handled = 0;
	return work;
}

#define PYBPF_GUARD(ret) \
	do { if (!pybpf_generation_active()) return (ret); } while (0)
#endif

#endif
