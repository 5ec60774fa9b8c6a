/* Scope filter shared by pybpf's tracing probes: "is the current task one we
 * watch?". Set from Python before load (const volatile = .rodata):
 *   scope_cgroup_id/scope_cgroup_level: the task is in that cgroup v2 or below
 *     (bpf_get_current_ancestor_cgroup_id, so sub-cgroups count);
 *   scope_root_tgid: the task is that process or one of its descendants
 *     (walks real_parent, at most SCOPE_MAX_DEPTH levels);
 *   targ_pid: exactly this process (tgid).
 * All zero: every task. */
#ifndef PYBPF_SCOPE_H
#define PYBPF_SCOPE_H

#include <bpf/bpf_core_read.h>

#define SCOPE_MAX_DEPTH 32

const volatile __u64 scope_cgroup_id = 0;
const volatile __u32 scope_cgroup_level = 0;
const volatile __u32 scope_root_tgid = 0;
const volatile __u32 targ_pid = 0;

static __always_inline bool pybpf_in_scope(__u32 tgid)
{
	if (targ_pid && targ_pid != tgid)
		return false;
	if (scope_cgroup_id &&
	    bpf_get_current_ancestor_cgroup_id(scope_cgroup_level) != scope_cgroup_id)
		return false;
	if (scope_root_tgid && tgid != scope_root_tgid) {
		struct task_struct *t = (struct task_struct *)bpf_get_current_task();
		int i;

		for (i = 0; i < SCOPE_MAX_DEPTH; i++) {
			__u32 p;

			t = BPF_CORE_READ(t, real_parent);
			if (!t)
				return false;
			p = BPF_CORE_READ(t, tgid);
			if (p == scope_root_tgid)
				return true;
			if (p <= 1)
				return false;
		}
		return false;
	}
	return true;
}

#endif
