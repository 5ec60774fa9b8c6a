// SPDX-License-Identifier: GPL-2.0
/* .bss/.data written by Python and read by a tracepoint program (and back) while the
 * Python side may not call bpf(2): tests/test_globals.py checks the README's promise
 * that globals live through an mmap of the map, not map syscalls. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

__u32 target_tgid;
__u64 in_val;
__u64 out_val;
__u64 calls;
__u64 data_in = 5;
/* 16-byte integers: no struct module format, pybpf's generic int codec */
unsigned __int128 wide_in;
unsigned __int128 wide_out;
__int128 swide_in;
__int128 swide_out;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	out_val = in_val * 3 + data_in;
	wide_out = wide_in + wide_in + 1;
	swide_out = -swide_in;
	data_in++;
	calls++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
