// SPDX-License-Identifier: GPL-2.0
/* Cgroup local storage (BPF_MAP_TYPE_CGRP_STORAGE, Linux 6.2+), keyed from user
 * space by a cgroup directory fd. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

struct cg_val {
	__u64 calls;
	__u64 tag;
};

struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct cg_val);
} cgst SEC(".maps");

__u64 magic_pgid; /* getpgid(magic_pgid) marks the test's own calls */
__u64 cg_seen_tag;

/* getpgid(magic_pgid) in a cgroup that has storage (set from Python by cgroup
 * fd) bumps its counter; other cgroups have none and are left alone. */
SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	struct task_struct *task;
	struct cg_val *v;

	if (!magic_pgid || PT_REGS_PARM1_CORE_SYSCALL(regs) != magic_pgid)
		return 0;
	task = bpf_get_current_task_btf();
	v = bpf_cgrp_storage_get(&cgst, task->cgroups->dfl_cgrp, 0, 0);
	if (!v)
		return 0;
	__sync_fetch_and_add(&v->calls, 1);
	cg_seen_tag = v->tag;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
