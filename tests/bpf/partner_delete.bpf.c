// SPDX-License-Identifier: GPL-2.0
/* Test object for walks that meet keys deleted meanwhile (tests/test_walk_races.py):
 * whenever the test process deletes key K from a map (BPF_MAP_DELETE_ELEM, seen at
 * sys_enter_bpf), this program deletes key K ^ 1 from `pairs` first, as another
 * deleter would.  `partner_deletes` counts the keys it deleted. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;
__u64 partner_deletes;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} pairs SEC(".maps");

struct elem_attr {	/* the head of union bpf_attr for the map element commands */
	__u32 map_fd;
	__u32 pad;
	__u64 key;
};

SEC("tracepoint/syscalls/sys_enter_bpf")
int delete_partner(struct trace_event_raw_sys_enter *ctx)
{
	struct elem_attr attr;
	__u32 key;

	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	if (ctx->args[0] != BPF_MAP_DELETE_ELEM)
		return 0;
	if (bpf_probe_read_user(&attr, sizeof(attr), (void *)ctx->args[1]))
		return 0;
	if (bpf_probe_read_user(&key, sizeof(key), (void *)attr.key))
		return 0;
	key ^= 1;
	if (bpf_map_delete_elem(&pairs, &key) == 0)
		__sync_fetch_and_add(&partner_deletes, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
