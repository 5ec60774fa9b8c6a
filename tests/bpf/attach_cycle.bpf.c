// SPDX-License-Identifier: GPL-2.0
/* Attach/detach cycles (tests/test_attach_links.py): one program per kind of
 * link cleanup, and no CO-RE relocations, so a load does not parse the
 * kernel's BTF (a cycle costs ~1 ms instead of ~20 ms). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} socks SEC(".maps");

static __always_inline void bump(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&counts, &i);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("raw_tp/sched_process_exec")
int cycle_exec(void *ctx)
{
	bump(0);
	return 0;
}

SEC("socket")
int cycle_sock(struct __sk_buff *skb)
{
	bump(1);
	return skb->len;
}

SEC("sk_lookup")
int cycle_lookup(struct bpf_sk_lookup *ctx)
{
	bump(2);
	return SK_PASS;
}

SEC("perf_event")
int cycle_sample(void *ctx)
{
	bump(3);
	return 0;
}

SEC("xdp")
int cycle_xdp(struct xdp_md *ctx)
{
	bump(4);
	return XDP_PASS;
}

SEC("tc")
int cycle_tc(struct __sk_buff *skb)
{
	bump(5);
	return 0;
}

SEC("sk_msg")
int cycle_msg(struct sk_msg_md *msg)
{
	bump(6);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
