// SPDX-License-Identifier: GPL-2.0
/* memo_a/memo_b: one program, the two globals declared in opposite orders: objects of
 * the same size whose .rodata layouts differ, for the per-bytes memo of
 * tests/test_open_memo.py. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 memo_a = 1;
const volatile __u32 memo_b = 2;
__u64 seen_a;
__u64 seen_b;

SEC("syscall")
int copy(void *ctx)
{
	seen_a = memo_a;
	seen_b = memo_b;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
