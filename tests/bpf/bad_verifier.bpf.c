// SPDX-License-Identifier: GPL-2.0
/* Loads only if the verifier accepts a NULL dereference: it must not. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} m SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_execve")
int null_deref(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&m, &key);

	*v += 1; /* no NULL check: the verifier rejects this line */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
