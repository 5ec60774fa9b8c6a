// SPDX-License-Identifier: GPL-2.0
/* (libbpf 1.1 has no BPF_UPROBE: BPF_KPROBE reads the same pt_regs.)
 * User-space hooks: uprobe/uretprobe on tests/native/attach_target.c, a uprobe
 * on a libc function, and its USDT probe pybpf_test:added(sum, a). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/usdt.bpf.h>
#include "attach_common.h"

enum { UPROBE = 1, URETPROBE = 2, LIBC = 3, USDT = 4, USDT_ARG1 = 5, UPROBE_AUTO = 6 };

SEC("uprobe")
int BPF_KPROBE(on_add, int a, int b)
{
	__u32 pid = current_pid();

	hit(UPROBE, pid);
	put(UPROBE, pid, (__s64)a * 1000 + b);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(on_add_ret, int ret)
{
	__u32 pid = current_pid();

	hit(URETPROBE, pid);
	put(URETPROBE, pid, ret);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(on_libc)
{
	hit(LIBC, current_pid());
	return 0;
}

SEC("usdt")
int BPF_USDT(on_usdt, int sum, int a)
{
	__u32 pid = current_pid();

	hit(USDT, pid);
	put(USDT, pid, sum);
	put(USDT_ARG1, pid, a);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
