// SPDX-License-Identifier: GPL-2.0
/* A pre-BTF "legacy" map definition in SEC("maps"): libbpf 1.x refuses it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct legacy_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct legacy_def old_map SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 1,
};

SEC("tracepoint/syscalls/sys_enter_getpid")
int uses_nothing(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
