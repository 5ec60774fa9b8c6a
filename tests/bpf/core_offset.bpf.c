// SPDX-License-Identifier: GPL-2.0
/* A program whose only result is a CO-RE relocation: test_run() returns the byte
 * offset of task_struct.tgid in the BTF libbpf relocated against (the kernel's, or
 * btf_custom_path's): what libbpf really read, seen from the kernel side. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

SEC("syscall")
int tgid_offset(void *ctx)
{
	return bpf_core_field_offset(struct task_struct, tgid);
}

char LICENSE[] SEC("license") = "GPL";
