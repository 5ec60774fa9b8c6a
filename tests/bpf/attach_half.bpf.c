// SPDX-License-Identifier: GPL-2.0
/* Test object for Object.attach()'s all or nothing (tests/test_attach_all_or_nothing.py):
 * `counts` counts target_pid's getppid() calls in `calls`; `missing` names a
 * tracepoint that does not exist, so attaching it fails after `counts` attached. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;
__u64 calls;

SEC("tracepoint/syscalls/sys_enter_getppid")
int counts(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) == target_pid)
		__sync_fetch_and_add(&calls, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_pybpf_no_such_tracepoint")
int missing(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
