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

#endif
