// SPDX-License-Identifier: GPL-2.0
/* Shapes of foreign (libbpf-tools style) objects, for tests/test_foreign.py:
 * a tp_btf and a raw_tp version of one probe (paired alternatives, as runqlat
 * has) and a second tp_btf program on that event, a map left unsized for the loader (max_entries 0, as offcputime's
 * stackmap), an unsigned .rodata filter with C's all-ones default ((uid_t)-1),
 * no .data, a uretprobe whose section names no binary (bashreadline), a fentry
 * and a tp_btf whose targets do not exist. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

const volatile __u32 targ_uid = -1;
const volatile __u64 max_ns = -1;
const volatile __u8 small = 0;

__u64 btf_hits, raw_hits, twin_hits;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
} unsized SEC(".maps");

SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf)
{
	__u32 uid = (__u32)bpf_get_current_uid_gid();

	if (targ_uid != (__u32)-1 && uid != targ_uid)
		return 0;
	__sync_fetch_and_add(&btf_hits, 1);
	return 0;
}

/* a second program on the same event the same way: not an alternative of exec_btf */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf_twin)
{
	__sync_fetch_and_add(&twin_hits, 1);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(exec_raw)
{
	__u32 uid = (__u32)bpf_get_current_uid_gid();

	if (targ_uid != (__u32)-1 && uid != targ_uid)
		return 0;
	__sync_fetch_and_add(&raw_hits, 1);
	return 0;
}

SEC("uretprobe/readline")
int BPF_KRETPROBE(readline_ret, void *ret)
{
	__u32 k = 1;
	__u64 v = 1;

	bpf_map_update_elem(&unsized, &k, &v, BPF_ANY);
	return 0;
}

/* Stacks for symbolize(): a uprobe records the user stack where it fires, keyed by
 * its attach cookie; a tracepoint the kernel stack of a getppid() of target_pid. */
const volatile __u32 target_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 256);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 64 * sizeof(__u64));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __s64);
} user_stack_of SEC(".maps"), kernel_stack_of SEC(".maps");

SEC("uprobe")
int BPF_KPROBE(user_stack)
{
	__u32 key = bpf_get_attach_cookie(ctx);
	__s64 id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);

	bpf_map_update_elem(&user_stack_of, &key, &id, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int kernel_stack(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__s64 id;

	if (pid != target_pid)
		return 0;
	id = bpf_get_stackid(ctx, &stacks, 0);
	bpf_map_update_elem(&kernel_stack_of, &pid, &id, BPF_ANY);
	return 0;
}

SEC("fentry/pybpf_no_such_function_xyz")
int BPF_PROG(missing_fentry)
{
	return 0;
}

SEC("tp_btf/pybpf_no_such_tracepoint_xyz")
int BPF_PROG(missing_tp_btf)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
