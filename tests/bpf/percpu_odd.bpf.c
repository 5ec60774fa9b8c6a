// SPDX-License-Identifier: GPL-2.0
/* Test object for per-CPU values whose size is not a multiple of 8
 * (tests/test_percpu_odd.py): the kernel hands user space each CPU's value in an
 * 8-byte slot, so a 4-byte value is followed by 4 bytes of padding and a 12-byte
 * struct by 4.  getppid() by target_pid, on the CPU it runs on:
 *   pc32[0] += 1                      (a __u32 per CPU; slot 1 stays zero)
 *   pch[7]: calls += 1, cpu1 = cpu + 1, neg = -1000 * calls, neg8 = -calls
 *                                     (a 12-byte struct per CPU) */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 target_pid = 0;
/* a C string followed by more bytes after its NUL: the string is "odd" */
char label[16] = "odd\0padding";

struct odd {
	__u32 calls;
	__u32 cpu1;
	__s16 neg;
	__s8 neg8;
	__u8 spare;
}; /* 12 bytes: a 16-byte slot per CPU */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} pc32 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, struct odd);
} pch SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int count_getppid(void *ctx)
{
	__u32 zero = 0, key = 7, *c;
	struct odd fresh = {}, *t;

	if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
		return 0;
	c = bpf_map_lookup_elem(&pc32, &zero);
	if (c)
		*c += 1;
	t = bpf_map_lookup_elem(&pch, &key);
	if (!t) {
		bpf_map_update_elem(&pch, &key, &fresh, BPF_NOEXIST);
		t = bpf_map_lookup_elem(&pch, &key);
		if (!t)
			return 0;
	}
	t->calls += 1;
	t->cpu1 = bpf_get_smp_processor_id() + 1;
	t->neg = -1000 * (__s16)t->calls;
	t->neg8 = -(__s8)t->calls;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
