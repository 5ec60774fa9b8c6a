// SPDX-License-Identifier: GPL-2.0
/* profile: cpu-clock samples with user and kernel stacks.
 *
 * Attached to a software cpu-clock perf event on every CPU (Python opens the
 * events). Each sample counts (pid, comm, user stack id, kernel stack id) in
 * "counts"; the stacks themselves are in the "stacks" stack trace map.
 * Filters (.rodata): targ_pid (tgid, 0 = all), user_only, kernel_only,
 * include_idle. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "pybpf_common.h"

#define MAX_STACK_DEPTH 127

struct key_t {
	__u32 pid;
	__s32 user_stack_id;
	__s32 kern_stack_id;
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_pid = 0;
const volatile bool user_only = false;
const volatile bool kernel_only = false;
const volatile bool include_idle = false;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
	__uint(max_entries, 16384);
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct key_t);
	__type(value, __u64);
} counts SEC(".maps");

/* Samples whose stack could not be stored (stack map full or collision). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} missed SEC(".maps");

SEC("perf_event")
int profile_sample(struct bpf_perf_event_data *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, zero = 0;
	struct key_t key = {};
	__u64 one = 1, *n;

	if (!include_idle && (__u32)id == 0)
		return 0;
	if (targ_pid && targ_pid != tgid)
		return 0;
	key.pid = tgid;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.user_stack_id = kernel_only ? -1 : bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	key.kern_stack_id = user_only ? -1 : bpf_get_stackid(ctx, &stacks, 0);
	if ((!kernel_only && key.user_stack_id < 0 && key.user_stack_id != -14 /* EFAULT: none */) ||
	    (!user_only && key.kern_stack_id < 0 && key.kern_stack_id != -14)) {
		n = bpf_map_lookup_elem(&missed, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
	n = bpf_map_lookup_elem(&counts, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
	} else {
		bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
