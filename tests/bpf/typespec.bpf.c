// SPDX-License-Identifier: GPL-2.0
/* Test object for value types the object's BTF lacks (tests/test_typespec.py).
 *
 * struct ts_event is only written through the stack and helpers, never named by a
 * global, a map definition or a function signature, so clang emits no BTF for it
 * (as in most libbpf-tools objects): the test gives the type as a C declaration, a
 * ctypes.Structure or a numpy dtype.  Triggered by the test's getpriority(PRIO_PROCESS,
 * cookie) calls, filtered to its pid: each one emits the event into a ring buffer and
 * a perf buffer, stores it in `recorded` under the cookie and copies it to the
 * `.bss` variable last_event. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct ts_event {		/* 40 bytes */
	__u32 pid;
	__u32 tid;
	__u64 cookie;
	char comm[16];
	__s16 neg;		/* -(cookie & 0x7fff) */
	__u8 flags:3;		/* cookie & 7 */
	__u8 kind:5;		/* (cookie >> 3) & 31 */
	__u8 pad;
	__u32 small;		/* (u32)(cookie * 3) */
};

const volatile __u32 target_pid = 0;
__u8 last_event[40];

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 16);
} ts_rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, 4);
	__uint(value_size, 4);
} ts_pb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(key_size, 4);
	__uint(value_size, 40);	/* sizes, no types: the map has no BTF key/value */
} recorded SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpriority")
int on_getpriority(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ts_event ev = {};
	__u64 who;
	__u32 key;

	if ((__u32)(id >> 32) != target_pid)
		return 0;
	who = (__u32)ctx->args[1];
	ev.pid = id >> 32;
	ev.tid = (__u32)id;
	ev.cookie = who;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	ev.neg = -(__s16)(who & 0x7fff);
	ev.flags = who & 7;
	ev.kind = (who >> 3) & 31;
	ev.small = (__u32)(who * 3);
	bpf_ringbuf_output(&ts_rb, &ev, sizeof(ev), 0);
	bpf_perf_event_output(ctx, &ts_pb, BPF_F_CURRENT_CPU, &ev, sizeof(ev));
	key = (__u32)who;
	bpf_map_update_elem(&recorded, &key, &ev, BPF_ANY);
	__builtin_memcpy(last_event, &ev, sizeof(ev));
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
