// SPDX-License-Identifier: GPL-2.0
/* Test object: a tracepoint counter, maps of several kinds, globals, and a
 * program with no auto-attach target. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;
const volatile __s16 neg_default = -5;
__u64 bss_counter;
__s64 neg_seen; /* xdp_pass copies neg_default here: .rodata as the program saw it */
__u32 data_seen; /* ... and data_value */
__u32 data_value = 42;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} pcpu SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_execve")
int count_exec(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u64 one = 1, *v;

	bss_counter++;
	if (target_pid && pid != target_pid)
		return 0;
	v = bpf_map_lookup_elem(&counts, &pid);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&counts, &pid, &one, BPF_NOEXIST);
	return 0;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	neg_seen = neg_default;
	data_seen = data_value;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
