// SPDX-License-Identifier: GPL-2.0
/* opensnoop: one event per open(2)/openat(2)/openat2(2), from the syscalls
 * tracepoints. The path pointer and flags are saved at entry (keyed by
 * thread), the event is emitted at exit with the fd or -errno.
 * Filters (.rodata, set before load): targ_comm, targ_uid, targ_failed and
 * the scope of pybpf_scope.h (targ_pid, cgroup, process tree). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "pybpf_common.h"
#include "pybpf_scope.h"

#define PATH_LEN 256

struct args_t {
	const char *fname;
	__u64 flags;
	__u32 mode;
};

struct event {
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__s32 ret;
	__u64 flags;
	__u32 mode;
	__u32 syscall_nr;
	__u64 cgroup_id;
	__u64 ts;
	char comm[TASK_COMM_LEN];
	char path[PATH_LEN];
};

const volatile char targ_comm[TASK_COMM_LEN] = {};
const volatile __u32 targ_uid = (__u32)-1;
const volatile bool targ_failed = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct args_t);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");
PYBPF_EVENT_TYPE(events, struct event);

static __always_inline bool comm_matches(void)
{
	char comm[TASK_COMM_LEN];
	int i;

	if (!targ_comm[0])
		return true;
	bpf_get_current_comm(comm, sizeof(comm));
	for (i = 0; i < TASK_COMM_LEN; i++) {
		if (comm[i] != targ_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

static __always_inline int enter(const char *fname, __u64 flags, __u32 mode)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32, tid = (__u32)id;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct args_t args = {};

	if (targ_uid != (__u32)-1 && targ_uid != uid)
		return 0;
	if (!pybpf_in_scope(tgid) || !comm_matches())
		return 0;
	args.fname = fname;
	args.flags = flags;
	args.mode = mode;
	bpf_map_update_elem(&start, &tid, &args, BPF_ANY);
	return 0;
}

static __always_inline int leave(long ret, long nr)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct args_t *ap;
	struct event *e;

	ap = bpf_map_lookup_elem(&start, &tid);
	if (!ap)
		return 0;
	if (targ_failed && ret >= 0)
		goto cleanup;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		pybpf_count_drop();
		goto cleanup;
	}
	e->pid = id >> 32;
	e->tid = tid;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->ret = ret;
	e->flags = ap->flags;
	e->mode = ap->mode;
	e->syscall_nr = nr;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->ts = bpf_ktime_get_ns();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (bpf_probe_read_user_str(e->path, sizeof(e->path), ap->fname) < 0)
		e->path[0] = 0;
	bpf_ringbuf_submit(e, 0);
cleanup:
	bpf_map_delete_elem(&start, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_open")
int tracepoint__syscalls__sys_enter_open(struct trace_event_raw_sys_enter *ctx)
{
	return enter((const char *)ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_enter_openat")
int tracepoint__syscalls__sys_enter_openat(struct trace_event_raw_sys_enter *ctx)
{
	return enter((const char *)ctx->args[1], ctx->args[2], ctx->args[3]);
}

SEC("tracepoint/syscalls/sys_enter_openat2")
int tracepoint__syscalls__sys_enter_openat2(struct trace_event_raw_sys_enter *ctx)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), (void *)ctx->args[2]);
	return enter((const char *)ctx->args[1], how.flags, how.mode);
}

SEC("tracepoint/syscalls/sys_exit_open")
int tracepoint__syscalls__sys_exit_open(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, ctx->id);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int tracepoint__syscalls__sys_exit_openat(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, ctx->id);
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int tracepoint__syscalls__sys_exit_openat2(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret, ctx->id);
}

char LICENSE[] SEC("license") = "GPL";
