// SPDX-License-Identifier: GPL-2.0
/* Tracing hooks that need no kprobes or trampolines: tracepoint, raw
 * tracepoint, tp_btf, perf_event (cpu-clock), iter/task. Hook ids match
 * tests/test_attach_trace.py. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "attach_common.h"

enum { TP = 1, TP_AUTO = 2, RAW_TP = 3, RAW_TP_AUTO = 4, TP_BTF = 5, PERF = 6 };

/* Bare section: attached explicitly with attach_tracepoint(). */
SEC("tracepoint")
int on_tp(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 pid = current_pid();

	hit(TP, pid);
	put(TP, pid, ctx->pid);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int on_tp_auto(struct trace_event_raw_sched_process_exec *ctx)
{
	hit(TP_AUTO, current_pid());
	return 0;
}

/* sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm) */
SEC("raw_tp")
int on_raw_tp(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 pid = current_pid();

	hit(RAW_TP, pid);
	put(RAW_TP, pid, (__s64)(int)ctx->args[1]);
	return 0;
}

SEC("raw_tp/sched_process_exec")
int on_raw_tp_auto(struct bpf_raw_tracepoint_args *ctx)
{
	hit(RAW_TP_AUTO, current_pid());
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_tp_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u32 pid = current_pid();

	hit(TP_BTF, pid);
	put(TP_BTF, pid, p->tgid);
	return 0;
}

/* One cpu-clock sample: counted per CPU (hook PERF, pid = cpu) and per process. */
SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
	hit(PERF, bpf_get_smp_processor_id());
	hit(PERF + 100, current_pid());
	return 0;
}

SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;

	if (!task)
		return 0;
	BPF_SEQ_PRINTF(seq, "%d %d %s\n", task->tgid, task->pid, task->comm);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
