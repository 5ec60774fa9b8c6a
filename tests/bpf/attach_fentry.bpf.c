// SPDX-License-Identifier: GPL-2.0
/* BPF trampolines: fentry/fexit on do_unlinkat, and fmod_ret on the LSM hook
 * security_task_getpgid (modifiable without CONFIG_FUNCTION_ERROR_INJECTION):
 * getpgid(pid != 0) returns the hook's non-zero result, 4242 for target_pid. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "attach_common.h"

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

/* A non-zero return skips the original and becomes its result. */
SEC("fmod_ret/security_task_getpgid")
int BPF_PROG(fake_getpgid, struct task_struct *p, int ret)
{
	__u32 pid = current_pid();

	if (pid != target_pid)
		return 0;
	hit(FMOD_RET, pid);
	return 4242;
}

char LICENSE[] SEC("license") = "GPL";
