// SPDX-License-Identifier: GPL-2.0
/* Compiled without -g by the test: an object with no BTF at all. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("socket")
int accept_all(void *skb)
{
	return -1;
}

char LICENSE[] SEC("license") = "GPL";
