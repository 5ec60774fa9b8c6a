// SPDX-License-Identifier: GPL-2.0
/* Map kinds for the typed mapping layer: the kernel side reads what Python
 * wrote and writes what Python reads, so decoding is checked against the
 * kernel, not against itself. Run with BPF_PROG_TEST_RUN (syscall/xdp programs)
 * or triggered by syscalls (tracepoints). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct val {
	__u64 count;
	__u64 bytes;
	__u32 pid;
	__u32 flags;
	__u64 stamp;
}; /* 32 bytes */

struct lpm_v4 {
	__u32 prefixlen;
	__u8 data[4];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct val);
} vals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} results SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} pc_arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct val);
} pc_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, __u64);
	__type(value, __u32);
} lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 8);
	__type(value, __u32);
} fifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK);
	__uint(max_entries, 8);
	__type(value, __u32);
} lifo SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u32);
} routes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_BLOOM_FILTER);
	__uint(max_entries, 64);
	__uint(map_extra, 3);
	__type(value, __u32);
} bloom SEC(".maps");

struct inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} inner_a SEC(".maps"), inner_b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner);
} outer_arr SEC(".maps") = {
	.values = { [0] = &inner_a },
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, 4);
	__type(key, __u32);
	__array(values, struct inner);
} outer_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 64);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 32 * sizeof(__u64));
} stacks SEC(".maps");

/* User stacks in a map of their own: in one map a kernel and a user stack can hash to
 * the same bucket, and bpf_get_stackid() then fails with -EEXIST. */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 64);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 32 * sizeof(__u64));
} ustacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} churn SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} devs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} jmp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct val);
} tstore SEC(".maps");

__u32 target_tgid;
__u64 churn_calls;
__u32 kstack_id = -1;
__u32 ustack_id = -1;
__u32 stacker_calls;

static __always_inline void result(__u32 i, __u64 v)
{
	bpf_map_update_elem(&results, &i, &v, BPF_ANY);
}

/* Reads vals[1] (written by Python), writes vals[2] derived from it; run with
 * BPF_PROG_TEST_RUN on a dummy packet (xdp: not sleepable, so every map kind). */
SEC("xdp")
int derive(struct xdp_md *ctx)
{
	__u32 k1 = 1, k2 = 2, z = 0, v32;
	struct val *v = bpf_map_lookup_elem(&vals, &k1);
	struct val out = {};
	__u64 *p;
	struct lpm_v4 lk = { .prefixlen = 32, .data = { 10, 1, 2, 3 } };
	__u32 *route, probe = 42;
	void *in;

	if (v) {
		out.count = v->count * 2;
		out.bytes = v->bytes + 1;
		out.pid = v->pid;
		out.flags = v->flags | 0x100;
		out.stamp = v->stamp;
		bpf_map_update_elem(&vals, &k2, &out, BPF_ANY);
	}
	p = bpf_map_lookup_elem(&pc_arr, &z);
	if (p)
		*p += 1;
	/* queue/stack: pop what Python pushed, then push 100..102 */
	if (bpf_map_pop_elem(&fifo, &v32) == 0)
		result(0, v32);
	if (bpf_map_pop_elem(&lifo, &v32) == 0)
		result(1, v32);
	for (__u32 i = 100; i < 103; i++) {
		/* push a copy: with &i the counter lives on the stack, where the 6.1
		 * verifier loses its value and rejects the loop as infinite */
		__u32 v = i;

		bpf_map_push_elem(&fifo, &v, 0);
		bpf_map_push_elem(&lifo, &v, 0);
	}
	route = bpf_map_lookup_elem(&routes, &lk);
	result(2, route ? *route : 0);
	result(3, bpf_map_peek_elem(&bloom, &probe) == 0);
	probe = 43;
	result(4, bpf_map_peek_elem(&bloom, &probe) == 0);
	/* array of maps: read inner[0], write inner[1] */
	in = bpf_map_lookup_elem(&outer_arr, &z);
	if (in) {
		__u32 one = 1;
		__u64 seventy = 77;

		p = bpf_map_lookup_elem(in, &z);
		result(5, p ? *p : 0);
		bpf_map_update_elem(in, &one, &seventy, BPF_ANY);
	}
	k1 = 7;
	in = bpf_map_lookup_elem(&outer_hash, &k1);
	if (in) {
		p = bpf_map_lookup_elem(in, &z);
		result(6, p ? *p : 0);
	}
	return XDP_PASS;
}

/* Tail call: entry jumps to jmp[0]; falls through (result 7 = 1) if it is empty. */
SEC("xdp")
int tail_entry(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp, 0);
	result(7, 1);
	return XDP_PASS;
}

SEC("xdp")
int tail_target(struct xdp_md *ctx)
{
	result(7, 2);
	return XDP_DROP;
}

/* The kernel as a concurrent writer: every getpgid() of target_tgid inserts
 * one churn key and deletes another (keys 10000..10499). */
SEC("tracepoint/syscalls/sys_enter_getpgid")
int churner(void *ctx)
{
	__u64 n;
	__u32 k;

	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	n = __sync_fetch_and_add(&churn_calls, 1);
	k = 10000 + (n * 7919) % 500;
	if (n & 1)
		bpf_map_delete_elem(&churn, &k);
	else
		bpf_map_update_elem(&churn, &k, &n, BPF_ANY);
	return 0;
}

/* Stacks of getppid() calls by target_tgid. A raw tracepoint, not the
 * syscalls:sys_enter_getppid one: some kernels (6.1) hand syscall tracepoints
 * the user-mode registers, so the kernel stack would be empty (-EFAULT). */
#if defined(__TARGET_ARCH_arm64)
#define NR_GETPPID 173
#else
#define NR_GETPPID 110
#endif
SEC("raw_tp/sys_enter")
int stacker(struct bpf_raw_tracepoint_args *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid || ctx->args[1] != NR_GETPPID)
		return 0;
	kstack_id = bpf_get_stackid(ctx, &stacks, 0);
	ustack_id = bpf_get_stackid(ctx, &ustacks, BPF_F_USER_STACK);
	stacker_calls++;
	return 0;
}

/* Task local storage: read what Python stored for this task, update it. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int task_store(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct val *v;

	if (tgid != target_tgid)
		return 0;
	v = bpf_task_storage_get(&tstore, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (v) {
		result(8, v->bytes);
		v->count += 1;
		v->pid = tgid;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
