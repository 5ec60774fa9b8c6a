// SPDX-License-Identifier: GPL-2.0
/* BPF trampolines: fentry/fexit on do_unlinkat, and fmod_ret on the getpgid
 * syscall making it return 4242 for target_pid (set before load). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "attach_common.h"

#if defined(__TARGET_ARCH_x86)
#define SYSCALL(name) "__x64_sys_" #name
#elif defined(__TARGET_ARCH_arm64)
#define SYSCALL(name) "__arm64_sys_" #name
#elif defined(__TARGET_ARCH_s390)
#define SYSCALL(name) "__s390x_sys_" #name
#else
#define SYSCALL(name) "sys_" #name
#endif

enum { FENTRY = 1, FEXIT = 2, FMOD_RET = 3 };

const volatile __u32 target_pid = 0;

SEC("fentry/do_unlinkat")
int BPF_PROG(on_unlink_entry, int dfd, struct filename *name)
{
	__u32 pid = current_pid();

	hit(FENTRY, pid);
	put(FENTRY, pid, dfd);
	return 0;
}

SEC("fexit/do_unlinkat")
int BPF_PROG(on_unlink_exit, int dfd, struct filename *name, int ret)
{
	__u32 pid = current_pid();

	hit(FEXIT, pid);
	put(FEXIT, pid, ret);
	return 0;
}

/* A non-zero return skips the syscall and becomes its result. */
SEC("fmod_ret/" SYSCALL(getpgid))
int BPF_PROG(fake_getpgid, struct pt_regs *regs, int ret)
{
	__u32 pid = current_pid();

	if (pid != target_pid)
		return 0;
	hit(FMOD_RET, pid);
	return 4242;
}

char LICENSE[] SEC("license") = "GPL";
