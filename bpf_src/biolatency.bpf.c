// SPDX-License-Identifier: GPL-2.0
/* biolatency: block I/O latency (issue -> completion) as log2 histograms.
 *
 * tp_btf block_rq_issue stamps each request, tp_btf block_rq_complete adds
 * the elapsed time to a log2 bucket of the histogram of its disk (dev 0 when
 * not per disk). Python reads the "hists" map.
 * Filters (.rodata): targ_dev (MKDEV(major, minor), 0 = all), targ_per_disk,
 * targ_ms (milliseconds instead of microseconds). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "pybpf_common.h"

#define MAX_SLOTS 27
#define MINORBITS 20

struct hist_key {
	__u32 dev;
};

struct hist {
	__u32 slots[MAX_SLOTS];
	__u64 sum;	/* of the latencies counted, in the slots' unit: a histogram's _sum */
};

const volatile __u32 targ_dev = 0;
const volatile bool targ_per_disk = false;
const volatile bool targ_ms = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct request *);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct hist_key);
	__type(value, struct hist);
} hists SEC(".maps");

static const struct hist zero_hist = {};

static __always_inline __u32 rq_dev(struct request *rq)
{
	struct gendisk *disk = BPF_CORE_READ(rq, q, disk);

	if (!disk)
		return 0;
	return ((__u32)BPF_CORE_READ(disk, major) << MINORBITS) | BPF_CORE_READ(disk, first_minor);
}

static __always_inline __u32 log2_u64(__u64 v)
{
	__u32 r = 0;

	while (v > 1 && r < 63) {
		v >>= 1;
		r++;
	}
	return r;
}

SEC("tp_btf/block_rq_issue")
int BPF_PROG(biolatency_issue, struct request *rq)
{
	__u64 ts;

	if (targ_dev && rq_dev(rq) != targ_dev)
		return 0;
	ts = bpf_ktime_get_ns();
	bpf_map_update_elem(&start, &rq, &ts, BPF_ANY);
	return 0;
}

SEC("tp_btf/block_rq_complete")
int BPF_PROG(biolatency_complete, struct request *rq, int error, unsigned int nr_bytes)
{
	struct hist_key key = {};
	struct hist *h;
	__u64 *tsp, delta;
	__u32 slot;

	tsp = bpf_map_lookup_elem(&start, &rq);
	if (!tsp)
		return 0;
	delta = bpf_ktime_get_ns() - *tsp;
	bpf_map_delete_elem(&start, &rq);
	if ((__s64)delta < 0)
		return 0;
	delta /= targ_ms ? 1000000U : 1000U;
	if (targ_per_disk)
		key.dev = rq_dev(rq);
	h = bpf_map_lookup_elem(&hists, &key);
	if (!h) {
		bpf_map_update_elem(&hists, &key, &zero_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, &key);
		if (!h)
			return 0;
	}
	slot = log2_u64(delta);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->sum, delta);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
