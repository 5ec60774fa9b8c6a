/* SPDX-License-Identifier: GPL-2.0 */
/* Shared by the tests/bpf/attach_*.bpf.c objects: every program records
 * (hook, pid) -> hit count in `hits` and (hook, pid) -> last value in `vals`,
 * so a test reads exactly what its own process (or child) caused. */
#ifndef PYBPF_ATTACH_COMMON_H
#define PYBPF_ATTACH_COMMON_H

struct hook_key {
	__u32 hook;
	__u32 pid;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct hook_key);
	__type(value, __u64);
} hits SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct hook_key);
	__type(value, __s64);
} vals SEC(".maps");

static __always_inline void hit(__u32 hook, __u32 pid)
{
	struct hook_key k = { .hook = hook, .pid = pid };
	__u64 one = 1, *v;

	v = bpf_map_lookup_elem(&hits, &k);
	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&hits, &k, &one, BPF_NOEXIST);
}

static __always_inline void put(__u32 hook, __u32 pid, __s64 value)
{
	struct hook_key k = { .hook = hook, .pid = pid };

	bpf_map_update_elem(&vals, &k, &value, BPF_ANY);
}

static __always_inline __u32 current_pid(void)
{
	return bpf_get_current_pid_tgid() >> 32;
}

#endif
