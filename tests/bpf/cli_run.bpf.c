// SPDX-License-Identifier: GPL-2.0
/* For the CLI tests (pybpf run/inspect/map dump): one event per getcwd(2) of
 * targ_pid into a ring buffer and one into a perf buffer, and a per-pid count
 * in a hash map. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "pybpf_common.h"

struct cli_event {
	__u32 pid;
	__u32 ppid;
	__s32 tag;
	char comm[16];
};

struct cli_stat {
	__u64 calls;
	char last_comm[16];
};

const volatile __u32 targ_pid = 0;
const volatile __s32 tag = -1;
__u64 total_calls = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} cli_events SEC(".maps");
PYBPF_EVENT_TYPE(cli_events, struct cli_event);

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} cli_perf SEC(".maps");
PYBPF_EVENT_TYPE(cli_perf, struct cli_event);

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct cli_stat);
} stats SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getcwd")
int cli_getcwd(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct cli_stat *st, init = {};
	struct cli_event *e, pe = {};

	if (targ_pid && pid != targ_pid)
		return 0;
	__sync_fetch_and_add(&total_calls, 1);
	st = bpf_map_lookup_elem(&stats, &pid);
	if (!st) {
		bpf_map_update_elem(&stats, &pid, &init, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&stats, &pid);
		if (!st)
			return 0;
	}
	st->calls++;
	bpf_get_current_comm(st->last_comm, sizeof(st->last_comm));
	e = bpf_ringbuf_reserve(&cli_events, sizeof(*e), 0);
	if (!e) {
		pybpf_count_drop();
		return 0;
	}
	e->pid = pid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->tag = tag;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	/* The same record through the perf buffer, tagged negative. */
	pe.pid = e->pid;
	pe.ppid = e->ppid;
	pe.tag = -tag;
	__builtin_memcpy(pe.comm, e->comm, sizeof(pe.comm));
	bpf_ringbuf_submit(e, 0);
	bpf_perf_event_output(ctx, &cli_perf, BPF_F_CURRENT_CPU, &pe, sizeof(pe));
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
