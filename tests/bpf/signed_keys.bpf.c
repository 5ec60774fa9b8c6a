// SPDX-License-Identifier: GPL-2.0
/* Test object for signed integer keys (tests/test_signed_keys.py): getppid() by
 * target_pid writes keys the kernel picked, negative ones among them, into a hash
 * keyed by __s32 and one keyed by __s64; each value is the key's own bits. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __s32);
	__type(value, __u32);
} s32k SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __s64);
	__type(value, __u64);
} s64k SEC(".maps");

static __always_inline void put32(__s32 k)
{
	__u32 v = (__u32)k;

	bpf_map_update_elem(&s32k, &k, &v, BPF_ANY);
}

static __always_inline void put64(__s64 k)
{
	__u64 v = (__u64)k;

	bpf_map_update_elem(&s64k, &k, &v, BPF_ANY);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int write_keys(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	put32(-1);
	put32(-7);
	put32(-2147483647 - 1);
	put32(5);
	put64(-1);
	put64(-9223372036854775807LL - 1);
	put64(3);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
