// SPDX-License-Identifier: GPL-2.0
/* Network hooks: XDP, tc (tcx and clsact), cgroup_skb, socket filter, sk_msg
 * on a sockmap, sk_lookup on a netns. Packet counters are keyed by
 * (hook, UDP destination port) so a test counts exactly its own packets;
 * drop_port (an array map, key 0) is the port the dropping programs drop. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "attach_common.h"

#define ETH_P_IP 0x0800
#define TC_ACT_OK 0
#define TC_ACT_SHOT 2

enum {
	XDP_PASSED = 1, XDP_DROPPED = 2, TC_INGRESS = 3, TC_EGRESS = 4,
	CG_INGRESS = 5, CG_EGRESS = 6, CG_DROPPED = 7, SOCK_SEEN = 8, SOCK_DROPPED = 9,
	SK_MSG = 10, SK_LOOKUP = 11,
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} drop_port SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} socks SEC(".maps");

static __always_inline __u32 dropping(void)
{
	__u32 zero = 0, *p = bpf_map_lookup_elem(&drop_port, &zero);

	return p ? *p : 0;
}

/* UDP destination port of an Ethernet frame in [data, end), or 0. */
static __always_inline __u32 eth_udp_dport(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp;

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return 0;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return 0;
	return bpf_ntohs(udp->dest);
}

SEC("xdp")
int xdp_count(struct xdp_md *ctx)
{
	__u32 port = eth_udp_dport((void *)(long)ctx->data, (void *)(long)ctx->data_end);

	if (!port)
		return XDP_PASS;
	if (port == dropping()) {
		hit(XDP_DROPPED, port);
		return XDP_DROP;
	}
	hit(XDP_PASSED, port);
	return XDP_PASS;
}

SEC("tc")
int tc_ingress(struct __sk_buff *skb)
{
	__u32 port = eth_udp_dport((void *)(long)skb->data, (void *)(long)skb->data_end);

	if (port)
		hit(TC_INGRESS, port);
	return TC_ACT_OK;
}

SEC("tc")
int tc_egress(struct __sk_buff *skb)
{
	__u32 port = eth_udp_dport((void *)(long)skb->data, (void *)(long)skb->data_end);

	if (port)
		hit(TC_EGRESS, port);
	return TC_ACT_OK;
}

/* cgroup_skb sees the packet from its IP header. */
static __always_inline __u32 ip_udp_dport(struct __sk_buff *skb)
{
	struct iphdr ip;
	__be16 dport;

	if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)) < 0)
		return 0;
	if (ip.version != 4 || ip.protocol != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, ip.ihl * 4 + 2, &dport, sizeof(dport)) < 0)
		return 0;
	return bpf_ntohs(dport);
}

SEC("cgroup_skb/ingress")
int cg_ingress(struct __sk_buff *skb)
{
	__u32 port = ip_udp_dport(skb);

	if (port)
		hit(CG_INGRESS, port);
	return 1;
}

SEC("cgroup_skb/egress")
int cg_egress(struct __sk_buff *skb)
{
	__u32 port = ip_udp_dport(skb);

	if (!port)
		return 1;
	if (port == dropping()) {
		hit(CG_DROPPED, port);
		return 0;
	}
	hit(CG_EGRESS, port);
	return 1;
}

/* Socket filter on an AF_UNIX datagram socket: the data is the payload.
 * Datagrams starting with 'D' are dropped; the others are kept whole. */
SEC("socket")
int sock_filter(struct __sk_buff *skb)
{
	__u8 first = 0;

	bpf_skb_load_bytes(skb, 0, &first, 1);
	if (first == 'D') {
		hit(SOCK_DROPPED, 0);
		return 0;
	}
	hit(SOCK_SEEN, 0);
	return skb->len;
}

SEC("sk_msg")
int on_msg(struct sk_msg_md *msg)
{
	hit(SK_MSG, msg->local_port);
	put(SK_MSG, msg->local_port, msg->size);
	return SK_PASS;
}

SEC("sk_lookup")
int on_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol == IPPROTO_UDP)
		hit(SK_LOOKUP, ctx->local_port);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
