// SPDX-License-Identifier: GPL-2.0
/* The kernel as a concurrent writer for map walks (tests/test_walks.py): each run of
 * `churn` (BPF_PROG_TEST_RUN, repeat=N) inserts one volatile key and deletes another
 * in every map below, while Python walks them. Volatile keys are 10000..10000+NV-1
 * (LPM: 10.1.x.y/32); the stable keys are the ones the test itself put in. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define NV 512

struct lpm_v4 {
	__u32 prefixlen;
	__u8 data[4];
};

#define HASH_MAP(name, kind)                     \
	struct {                                 \
		__uint(type, kind);              \
		__uint(max_entries, 4096);       \
		__type(key, __u32);              \
		__type(value, __u64);            \
	} name SEC(".maps")

HASH_MAP(h, BPF_MAP_TYPE_HASH);
HASH_MAP(lru, BPF_MAP_TYPE_LRU_HASH);
HASH_MAP(pch, BPF_MAP_TYPE_PERCPU_HASH);
HASH_MAP(lrupc, BPF_MAP_TYPE_LRU_PERCPU_HASH);

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 4096);
	__type(key, struct lpm_v4);
	__type(value, __u64);
} trie SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 16);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 16 * sizeof(__u64));
} stacks SEC(".maps");

__u64 churn_calls;
__u32 target_tgid;
__s64 stack_id = -1;

SEC("xdp")
int churn(struct xdp_md *ctx)
{
	__u64 n = __sync_fetch_and_add(&churn_calls, 1);
	__u32 k = 10000 + (n * 7919) % NV;
	struct lpm_v4 lk = { .prefixlen = 32, .data = { 10, 1, (k >> 8) & 0xff, k & 0xff } };

	if (n & 1) {
		bpf_map_delete_elem(&h, &k);
		bpf_map_delete_elem(&lru, &k);
		bpf_map_delete_elem(&pch, &k);
		bpf_map_delete_elem(&lrupc, &k);
		bpf_map_delete_elem(&trie, &lk);
	} else {
		bpf_map_update_elem(&h, &k, &n, BPF_ANY);
		bpf_map_update_elem(&lru, &k, &n, BPF_ANY);
		bpf_map_update_elem(&pch, &k, &n, BPF_ANY);
		bpf_map_update_elem(&lrupc, &k, &n, BPF_ANY);
		bpf_map_update_elem(&trie, &lk, &n, BPF_ANY);
	}
	return XDP_PASS;
}

/* One kernel stack of a syscall by target_tgid into `stacks` (a non-empty stack map). */
SEC("raw_tp/sys_enter")
int stacker(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) == target_tgid)
		stack_id = bpf_get_stackid(ctx, &stacks, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
