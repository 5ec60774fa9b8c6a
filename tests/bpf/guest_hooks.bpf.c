// SPDX-License-Identifier: GPL-2.0
/* Test object for tests/test_guest_hooks.py: one program per kernel-function hook
 * (kprobe, fentry, fexit, lsm), each counting what this test process caused in
 * its own .bss globals. Tests enable only the program they exercise. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

const volatile __u32 target_tgid = 0;
const volatile __u64 target_ino = 0;

__u64 kprobe_hits;
__s64 kprobe_dfd;
__u64 fentry_hits;
__s64 fentry_dfd;
__u64 fexit_hits;
__s64 fexit_ret;
__u64 lsm_hits;

static __always_inline bool mine(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

SEC("kprobe/do_unlinkat")
int BPF_KPROBE(on_kprobe, int dfd)
{
	if (mine()) {
		__sync_fetch_and_add(&kprobe_hits, 1);
		kprobe_dfd = dfd;
	}
	return 0;
}

SEC("fentry/do_unlinkat")
int BPF_PROG(on_fentry, int dfd, struct filename *name)
{
	if (mine()) {
		__sync_fetch_and_add(&fentry_hits, 1);
		fentry_dfd = dfd;
	}
	return 0;
}

SEC("fexit/do_unlinkat")
int BPF_PROG(on_fexit, int dfd, struct filename *name, int ret)
{
	if (mine()) {
		__sync_fetch_and_add(&fexit_hits, 1);
		fexit_ret = ret;
	}
	return 0;
}

SEC("lsm/file_open")
int BPF_PROG(on_file_open, struct file *file)
{
	if (mine() && BPF_CORE_READ(file, f_inode, i_ino) == target_ino)
		__sync_fetch_and_add(&lsm_hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
