// SPDX-License-Identifier: GPL-2.0
/* The maps of benchmarks/bench_maps.py: a u32 -> 32-byte struct value in each kind the
 * single-key rows measure (hash, array, per-CPU hash, per-CPU array).  No programs: the
 * maps are only read and written from user space, by pybpf and by map_ops.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct val {
	__u64 count;
	__u64 bytes;
	__u32 pid;
	__u32 flags;
	__u64 stamp;
}; /* 32 bytes */

#define MAP(kind, mname)				\
	struct {					\
		__uint(type, kind);			\
		__uint(max_entries, 1024);		\
		__type(key, __u32);			\
		__type(value, struct val);		\
	} mname SEC(".maps")

MAP(BPF_MAP_TYPE_HASH, vals);
MAP(BPF_MAP_TYPE_ARRAY, arr);
MAP(BPF_MAP_TYPE_PERCPU_HASH, pc_hash);
MAP(BPF_MAP_TYPE_PERCPU_ARRAY, pc_arr);

char LICENSE[] SEC("license") = "GPL";
