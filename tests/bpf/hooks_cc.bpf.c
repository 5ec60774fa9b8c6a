// SPDX-License-Identifier: GPL-2.0
/* Two BPF TCP congestion controls in .struct_ops.link maps (registered by BPF
 * links). Each counts its calls in `calls` (index: CC_A_* / CC_B_*). The names
 * PYBPFCCA0000000 / PYBPFCCB0000000 are placeholders that a test rewrites to
 * names unique to its process before opening the object. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

enum { CC_A_INIT, CC_A_ACK, CC_B_INIT, CC_B_ACK, NCALLS };

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NCALLS);
	__type(key, __u32);
	__type(value, __u64);
} calls SEC(".maps");

static __always_inline void count(__u32 i)
{
	__u64 *v = bpf_map_lookup_elem(&calls, &i);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("struct_ops")
void BPF_PROG(a_init, struct sock *sk)
{
	count(CC_A_INIT);
}

SEC("struct_ops")
void BPF_PROG(a_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	count(CC_A_ACK);
}

SEC("struct_ops")
void BPF_PROG(b_init, struct sock *sk)
{
	count(CC_B_INIT);
}

SEC("struct_ops")
void BPF_PROG(b_cong_avoid, struct sock *sk, __u32 ack, __u32 acked)
{
	count(CC_B_ACK);
}

SEC("struct_ops")
__u32 BPF_PROG(cc_ssthresh, struct sock *sk)
{
	const struct tcp_sock *tp = (struct tcp_sock *)sk;

	return tp->snd_cwnd > 4 ? tp->snd_cwnd >> 1 : 2;
}

SEC("struct_ops")
__u32 BPF_PROG(cc_undo_cwnd, struct sock *sk)
{
	const struct tcp_sock *tp = (struct tcp_sock *)sk;

	return tp->snd_cwnd;
}

SEC(".struct_ops.link")
struct tcp_congestion_ops cc_a = {
	.init = (void *)a_init,
	.cong_avoid = (void *)a_cong_avoid,
	.ssthresh = (void *)cc_ssthresh,
	.undo_cwnd = (void *)cc_undo_cwnd,
	.name = "PYBPFCCA0000000",
};

SEC(".struct_ops.link")
struct tcp_congestion_ops cc_b = {
	.init = (void *)b_init,
	.cong_avoid = (void *)b_cong_avoid,
	.ssthresh = (void *)cc_ssthresh,
	.undo_cwnd = (void *)cc_undo_cwnd,
	.name = "PYBPFCCB0000000",
};

char LICENSE[] SEC("license") = "GPL";
