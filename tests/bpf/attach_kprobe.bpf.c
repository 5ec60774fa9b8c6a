// SPDX-License-Identifier: GPL-2.0
/* kprobe/kretprobe on do_unlinkat and ksyscall/kretsyscall on getpgid.
 * These load everywhere; attaching needs CONFIG_KPROBES. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "attach_common.h"

enum { KPROBE = 1, KRETPROBE = 2, KSYSCALL = 3, KRETSYSCALL = 4 };

/* int do_unlinkat(int dfd, struct filename *name) */
SEC("kprobe/do_unlinkat")
int BPF_KPROBE(on_unlinkat, int dfd)
{
	__u32 pid = current_pid();

	hit(KPROBE, pid);
	put(KPROBE, pid, dfd);
	return 0;
}

SEC("kretprobe/do_unlinkat")
int BPF_KRETPROBE(on_unlinkat_ret, long ret)
{
	__u32 pid = current_pid();

	hit(KRETPROBE, pid);
	put(KRETPROBE, pid, (int)ret);
	return 0;
}

SEC("ksyscall/getpgid")
int BPF_KSYSCALL(on_getpgid, pid_t which)
{
	__u32 pid = current_pid();

	hit(KSYSCALL, pid);
	put(KSYSCALL, pid, which);
	return 0;
}

SEC("kretsyscall/getpgid")
int BPF_KRETPROBE(on_getpgid_ret, long ret)
{
	__u32 pid = current_pid();

	hit(KRETSYSCALL, pid);
	put(KRETSYSCALL, pid, ret);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
