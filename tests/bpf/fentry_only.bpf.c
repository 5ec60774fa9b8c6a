// SPDX-License-Identifier: GPL-2.0
/* A trampoline program: loads only where the kernel supports fentry. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

__u64 hits;

SEC("fentry/do_unlinkat")
int BPF_PROG(on_unlinkat, int dfd, struct filename *name)
{
	hits++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
