// SPDX-License-Identifier: GPL-2.0
/* execsnoop: one event per exec, from the syscalls:sys_{enter,exit}_execve{,at}
 * tracepoints. The path and argv are read at entry and the event is emitted
 * at exit, with the return code. Filters: targ_uid, ignore_failed and the
 * scope of pybpf_scope.h (pid, cgroup, process tree). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "pybpf_common.h"
#include "pybpf_scope.h"

#define ARGSIZE 128
#define MAX_ARGS 20
#define ARGS_BUF (ARGSIZE * MAX_ARGS)
#define FILENAME_LEN 256

struct event {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__s32 retval;
	__u64 cgroup_id;
	__u64 ts;
	__u32 args_count;
	__u32 args_size;
	char comm[TASK_COMM_LEN];
	char filename[FILENAME_LEN];
	char args[ARGS_BUF];
};

const volatile __u32 targ_uid = (__u32)-1;
const volatile bool ignore_failed = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct event);
} execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");
PYBPF_EVENT_TYPE(events, struct event);

static const struct event empty_event = {};

static __always_inline int enter(const char *filename, const char **argv)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct task_struct *task;
	struct event *e;
	unsigned int i;

	if (targ_uid != (__u32)-1 && targ_uid != uid)
		return 0;
	if (!pybpf_in_scope(tgid))
		return 0;
	if (bpf_map_update_elem(&execs, &tgid, &empty_event, BPF_NOEXIST))
		return 0;
	e = bpf_map_lookup_elem(&execs, &tgid);
	if (!e)
		return 0;

	task = (struct task_struct *)bpf_get_current_task();
	e->pid = tgid;
	e->uid = uid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->cgroup_id = bpf_get_current_cgroup_id();

	bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);
	for (i = 0; i < MAX_ARGS; i++) {
		const char *argp = NULL;
		int n;

		bpf_probe_read_user(&argp, sizeof(argp), &argv[i]);
		if (!argp)
			break;
		if (e->args_size > ARGS_BUF - ARGSIZE)
			break;
		n = bpf_probe_read_user_str(&e->args[e->args_size], ARGSIZE, argp);
		if (n <= 0)
			break;
		e->args_count++;
		e->args_size += n;
	}
	return 0;
}

static __always_inline int leave(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct event *e, *out;

	e = bpf_map_lookup_elem(&execs, &tgid);
	if (!e)
		return 0;
	if (ignore_failed && ret < 0)
		goto cleanup;
	e->retval = ret;
	e->ts = bpf_ktime_get_ns();
	bpf_get_current_comm(&e->comm, sizeof(e->comm));
	out = bpf_ringbuf_reserve(&events, sizeof(*out), 0);
	if (!out) {
		pybpf_count_drop();
		goto cleanup;
	}
	bpf_probe_read_kernel(out, sizeof(*out), e);
	bpf_ringbuf_submit(out, 0);
cleanup:
	bpf_map_delete_elem(&execs, &tgid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_execve")
int tracepoint__syscalls__sys_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	return enter((const char *)ctx->args[0], (const char **)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int tracepoint__syscalls__sys_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret);
}

/* execveat(dirfd, path, argv, envp, flags): fexecve() and friends. The path is
 * reported as given (relative to dirfd, or "" with AT_EMPTY_PATH). */
SEC("tracepoint/syscalls/sys_enter_execveat")
int tracepoint__syscalls__sys_enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return enter((const char *)ctx->args[1], (const char **)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int tracepoint__syscalls__sys_exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	return leave(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
