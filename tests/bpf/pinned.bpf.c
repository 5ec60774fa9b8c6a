// SPDX-License-Identifier: GPL-2.0
/* A map pinned by name under the object's pin_root_path, shared by every object
 * loaded with the same root. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct shared_val {
	__u64 hits;
	char who[8];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct shared_val);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} shared SEC(".maps");

SEC("syscall")
int bump(void *ctx)
{
	__u32 k = 1;
	struct shared_val *v = bpf_map_lookup_elem(&shared, &k);

	if (v)
		v->hits++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
