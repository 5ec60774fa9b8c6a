// SPDX-License-Identifier: GPL-2.0
/* For the exporter tests (tests/test_export.py): what the kernel counts for the
 * test's own actions, in every shape the exporters turn into metrics and logs.
 *  - exec_counts: execs of children of targ_ppid, keyed by (comm, enum uid_class);
 *  - write_calls: per-CPU count of targ_pid's write(2)s to targ_fd;
 *  - write_hist: log2 histogram of their sizes with the exact sum, keyed by fd;
 *  - size_hist: the same histogram as an array map, slot = key (no sum);
 *  - total_writes (.bss), and one ring buffer event per write. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "pybpf_common.h"

#define SLOTS 24

enum uid_class { ROOT_UID = 0, USER_UID = 1 };

struct exec_key {
	char comm[16];
	enum uid_class cls;
};

struct hist {
	__u64 slots[SLOTS];
	__u64 sum;
};

struct write_event {
	__u32 pid;
	__u32 fd;
	__u64 ts;
	__u64 size;
	enum uid_class cls;
	char comm[16];
};

const volatile __u32 targ_ppid = 0;
const volatile __u32 targ_pid = 0;
const volatile __s32 targ_fd = -1;
__u64 total_writes = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct exec_key);
	__type(value, __u64);
} exec_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} write_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct hist);
} write_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} size_hist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");
PYBPF_EVENT_TYPE(events, struct write_event);

static __always_inline __u32 log2l(__u64 v)
{
	__u32 r = 0;

	while (v > 1 && r < 63) {
		v >>= 1;
		r++;
	}
	return r;
}

SEC("tracepoint/sched/sched_process_exec")
int count_exec(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct exec_key key = {};
	__u64 one = 1, *n;

	if (BPF_CORE_READ(task, real_parent, tgid) != targ_ppid)
		return 0;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	key.cls = (__u32)bpf_get_current_uid_gid() ? USER_UID : ROOT_UID;
	n = bpf_map_lookup_elem(&exec_counts, &key);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&exec_counts, &key, &one, BPF_NOEXIST);
	return 0;
}

static const struct hist zero_hist = {};

SEC("tracepoint/syscalls/sys_enter_write")
int count_write(struct trace_event_raw_sys_enter *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	__u32 fd = (__u32)ctx->args[0], zero = 0, slot;
	__u64 size = ctx->args[2], *n;
	struct write_event *e;
	struct hist *h;

	if (pid != targ_pid || (__s32)fd != targ_fd)
		return 0;
	__sync_fetch_and_add(&total_writes, 1);
	n = bpf_map_lookup_elem(&write_calls, &zero);
	if (n)
		*n += 1;
	slot = log2l(size);
	if (slot >= SLOTS)
		slot = SLOTS - 1;
	h = bpf_map_lookup_elem(&write_hist, &fd);
	if (!h) {
		bpf_map_update_elem(&write_hist, &fd, &zero_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&write_hist, &fd);
		if (!h)
			return 0;
	}
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->sum, size);
	n = bpf_map_lookup_elem(&size_hist, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		pybpf_count_drop();
		return 0;
	}
	e->pid = pid;
	e->fd = fd;
	e->ts = bpf_ktime_get_ns();
	e->size = size;
	e->cls = (__u32)bpf_get_current_uid_gid() ? USER_UID : ROOT_UID;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
