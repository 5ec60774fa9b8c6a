// SPDX-License-Identifier: GPL-2.0
/* Test object for the integrity suite (tests/test_integrity_*.py): small, loads fast,
 * and marks its own maps from the kernel side so a test can tell two loaded
 * copies apart.  Filtered to target_pid:
 *   getppid()  -> bss.hits++, arr[0] = tag, one u64 record (tag << 32 | seq) into
 *                 the ring buffer `rb` and the perf buffer `pb`;
 *   getpgid()  -> drain the user ring buffer `urb` into `arr` (idx, value pairs). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;
const volatile __u64 tag = 0;

__u64 hits = 0;		/* .bss */
__u64 marker = 0x1234;	/* .data */

struct lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct urec {
	__u32 idx;
	__u32 pad;
	__u64 value;
};

struct urec *type_urec __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u64);
} h SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} arr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4);
	__type(value, __u64);
} lpm SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} pb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 16 * 1024);
} urb SEC(".maps");

struct odd_names {	/* members named like Python keywords and dunders */
	__u32 in;
	__u32 __init__;
	__u32 __slots__;
	__u32 items;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct odd_names);
} odd SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} tstore SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int mark(void *ctx)
{
	__u32 zero = 0;
	__u64 rec;

	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	rec = (tag << 32) | (__sync_fetch_and_add(&hits, 1) & 0xffffffff);
	bpf_map_update_elem(&arr, &zero, (void *)&tag, BPF_ANY);
	bpf_ringbuf_output(&rb, &rec, sizeof(rec), 0);
	bpf_perf_event_output(ctx, &pb, BPF_F_CURRENT_CPU, &rec, sizeof(rec));
	return 0;
}

static long drain_one(struct bpf_dynptr *dynptr, void *unused)
{
	struct urec r;

	if (bpf_dynptr_read(&r, sizeof(r), dynptr, 0, 0))
		return 1;
	if (r.idx > 0 && r.idx < 64)
		bpf_map_update_elem(&arr, &r.idx, &r.value, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int drain(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	bpf_user_ringbuf_drain(&urb, drain_one, NULL, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
