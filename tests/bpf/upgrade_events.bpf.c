// SPDX-License-Identifier: GPL-2.0
/* Event probe for live-upgrade tests (tests/test_upgrade.py). One record per
 * lseek() of the target process on its target fd; the record's sequence
 * number is the offset the process passed, so a lost or duplicated event shows
 * as a missing or repeated number. Builds (clang -D):
 *   EVENT_V2          the event gains a field, stats gains handled_v2
 *   KEY_V2            the stats map's key becomes signed (refused: an array
 *                     takes only a 32-bit integer key)
 *   NARROW            stats.handled narrows to 32 bits (refused if it overflows)
 *   TYPE_V2           the stats map becomes a hash (refused)
 *   UPGRADE_NO_GUARD  built without the generation guard
 *   USE_UPROBE        a uprobe on libc's lseek instead of the syscall tracepoint
 *   WITH_XDP          also an XDP program (a link the upgrade updates in place)
 *   SEEN_KEY_V2       the members of the `seen` hash map's key swap places (refused) */
#ifndef UPGRADE_NO_GUARD
#define PYBPF_GENERATIONS
#endif
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "pybpf_common.h"

#ifndef PYBPF_GUARD
#define PYBPF_GUARD(ret)
#endif

const volatile __u32 target_tgid = 0;
const volatile __u32 target_fd = 0;
const volatile __u32 build = 0;

/* .bss: the second build puts a variable before the counter (a changed layout,
 * migrated by variable name) */
#ifdef EVENT_V2
__u64 bss_v2_events;
#endif
__u64 bss_events;

struct event {
	__u64 seq;
	__u32 build;
	__u32 cpu;
#ifdef EVENT_V2
	__u64 extra;
#endif
};

struct stats {
#ifdef NARROW
	__u32 handled;
#else
	__u64 handled;
#endif
#ifdef EVENT_V2
	__u64 handled_v2;
#endif
};

#ifdef KEY_V2
#define STATS_KEY __s32
#else
#define STATS_KEY __u32
#endif

struct seen_key {
#ifdef SEEN_KEY_V2
	__u32 fd;
	__u32 tgid;
#else
	__u32 tgid;
	__u32 fd;
#endif
};

#ifndef DROP_SEEN /* a new build without this map: its pin must go (pybpf upgrade) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct seen_key);
	__type(value, __u64);
} seen SEC(".maps");
#endif

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);
} events SEC(".maps");

struct {
#ifdef TYPE_V2
	__uint(type, BPF_MAP_TYPE_HASH);
#else
	__uint(type, BPF_MAP_TYPE_ARRAY);
#endif
	__uint(max_entries, 1);
	__type(key, STATS_KEY);
	__type(value, struct stats);
} stats SEC(".maps");

PYBPF_EVENT_TYPE(events, struct event);

static __always_inline int handle(__u32 fd, __u64 off)
{
	STATS_KEY key = {};
	struct stats *st;
	struct event *e;

	if ((__u32)(bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	if (fd != target_fd)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		pybpf_count_drop();
		return 0;
	}
	e->seq = off;
	e->build = build;
	e->cpu = bpf_get_smp_processor_id();
#ifdef EVENT_V2
	e->extra = ~e->seq;
#endif
	bpf_ringbuf_submit(e, 0);
	__sync_fetch_and_add(&bss_events, 1);
#ifdef EVENT_V2
	__sync_fetch_and_add(&bss_v2_events, 1);
#endif
	st = bpf_map_lookup_elem(&stats, &key);
	if (st) {
		__sync_fetch_and_add(&st->handled, 1);
#ifdef EVENT_V2
		__sync_fetch_and_add(&st->handled_v2, 1);
#endif
	}
	return 0;
}

#ifdef USE_UPROBE
SEC("uprobe/libc.so.6:lseek64")
int BPF_KPROBE(on_lseek, int fd, long off)
{
	PYBPF_GUARD(0);
	return handle(fd, off);
}
#else
SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
	PYBPF_GUARD(0);
	return handle((__u32)ctx->args[0], ctx->args[1]);
}
#endif

#ifdef WITH_XDP
SEC("xdp")
int pass_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}
#endif

char LICENSE[] SEC("license") = "GPL";
