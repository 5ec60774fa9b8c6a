// SPDX-License-Identifier: GPL-2.0
/* For the CLI output tests (tests/test_cli_output.py): the kinds of things
 * `pybpf inspect` and `pybpf run` show besides cli_run.bpf.c's.
 * - a ring buffer without PYBPF_EVENT_TYPE (run prints raw bytes, or decodes
 *   them with --event-type), fed by a getcwd(2) tracepoint of targ_pid;
 * - a perf_event program (run attaches it to cpu-clock sampling) counting the
 *   samples that interrupt targ_pid; two ways to one event (tp_btf, raw_tp);
 *   a tracepoint program whose tracepoint does not exist;
 * - a hash and an array without BTF types, an array (its all-zero slots
 *   hidden), a per-CPU array, a hash of more than 100 entries (the text
 *   limit), a hash left at max_entries 0 (--max-entries);
 * - globals in .rodata (an int, a char array), .data (a typedef'd struct) and
 *   .bss (one never written);
 * - structs the object owns (a map value, an array element of one, an inner
 *   map's definition, a global's typedef) and kernel structs it only points to. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

struct ck_item {
	__u32 a;
	__u16 b;
};

struct ck_value {
	struct ck_item items[2];	/* an element type: owned */
	struct task_struct *owner;	/* through a pointer: not owned */
	__u64 hits;
};

typedef struct ck_cfg {
	__u32 limit;
	char label[8];
} ck_cfg_t;

enum ck_kind {
	CK_GETCWD = 1,
};

struct ck_record {	/* the ring's records: no PYBPF_EVENT_TYPE names it */
	__u32 pid;
	__u32 seq;
	__u32 flag;
	__u32 ppid;
	enum ck_kind kind;
	char prefix[8];
};

struct ck_stat {
	__u64 calls;
	__u64 ticks;
};

const volatile __u32 targ_pid = 0;
const volatile __u32 flag = 5;
const volatile char prefix[8] = "pre";
ck_cfg_t ck_cfg = { .limit = 3, .label = "cfg" };
__u32 ck_seq = 0;
__u32 ck_spare;	/* never written: a zero beside the non-zero variables of .bss */
struct ck_record ck_last;	/* the last record, for --event-type */
struct task_struct *ck_task;	/* a global pointer: what it points to is not owned */
extern unsigned int LINUX_KERNEL_VERSION __kconfig;	/* no value before load */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} ck_raw SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct ck_stat);
} ck_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} ck_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);		/* slot 1 stays zero on every CPU */
	__type(key, __u32);
	__type(value, __u64);
} ck_pcpu SEC(".maps");

struct {	/* per-CPU values wider than 64 bytes: each CPU's at a multiple of 8 */
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[9]);
} ck_wide SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} ck_big SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0);		/* sized by the user: --max-entries ck_sized=N */
	__type(key, __u32);
	__type(value, struct ck_value);
} ck_sized SEC(".maps");

struct ck_inner {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, __u32);
	__array(values, struct ck_inner);
} ck_outer SEC(".maps");

struct {	/* sizes only, no BTF types: dumped as raw bytes */
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} ck_plain SEC(".maps");

struct {	/* an array without BTF types: slot 1 gets the last sequence number */
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} ck_rawarr SEC(".maps");

#define BIG 120

SEC("tracepoint/syscalls/sys_enter_getcwd")
int ck_getcwd(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32, one = 1, zero = 0;
	struct ck_stat *st, init = {};
	struct ck_record *r;
	__u64 *c;

	if (pid != targ_pid)
		return 0;
	st = bpf_map_lookup_elem(&ck_stats, &pid);
	if (!st) {
		bpf_map_update_elem(&ck_stats, &pid, &init, BPF_NOEXIST);
		st = bpf_map_lookup_elem(&ck_stats, &pid);
		if (!st)
			return 0;
	}
	c = bpf_map_lookup_elem(&ck_counts, &one);
	if (c)
		__sync_fetch_and_add(c, 1);
	c = bpf_map_lookup_elem(&ck_pcpu, &zero);
	if (c)
		*c += 1;
	c = bpf_map_lookup_elem(&ck_wide, &zero);
	if (c)
		c[8] += 1;
	for (__u32 i = 0; i < BIG; i++)
		bpf_map_update_elem(&ck_big, &i, &pid, BPF_ANY);
	r = bpf_ringbuf_reserve(&ck_raw, sizeof(*r), 0);
	if (r) {
		r->pid = pid;
		r->seq = ++ck_seq;
		r->flag = flag;
		r->kind = LINUX_KERNEL_VERSION ? CK_GETCWD : 0;
		r->ppid = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(),
					real_parent, tgid);
		for (int i = 0; i < sizeof(r->prefix); i++)
			r->prefix[i] = prefix[i];	/* volatile reads: what --set wrote */
		ck_last = *r;
		bpf_map_update_elem(&ck_plain, &pid, &r->seq, BPF_ANY);
		bpf_map_update_elem(&ck_rawarr, &one, &r->seq, BPF_ANY);
		bpf_ringbuf_submit(r, 0);
	}
	__sync_fetch_and_add(&st->calls, 1);	/* last: the test waits for this count */
	return 0;
}

SEC("perf_event")
int ck_clock(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	struct ck_stat *st;

	if (pid != targ_pid)
		return 0;
	st = bpf_map_lookup_elem(&ck_stats, &pid);
	if (st)
		__sync_fetch_and_add(&st->ticks, 1);
	return 0;
}

/* Two ways to one event: `pybpf run` loads the better one the kernel supports. */
SEC("tp_btf/sched_process_fork")
int BPF_PROG(ck_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return 0;
}

SEC("raw_tp/sched_process_fork")
int ck_fork_raw(void *ctx)
{
	return 0;
}

/* Loads, but has no tracepoint to attach to: `pybpf run` says so and goes on. */
SEC("tracepoint/syscalls/sys_enter_pybpf_none")
int ck_nowhere(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
