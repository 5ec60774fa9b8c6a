// SPDX-License-Identifier: GPL-2.0
/* Map kinds whose values belong to kernel objects or hold fds: socket local
 * storage on a loopback TCP connection, and an XSKMAP that an XDP program
 * redirects UDP datagrams into (an AF_XDP socket receives them). Cgroup storage
 * (6.2+) is in mapkinds_cgrp.bpf.c, inode storage in mapkinds_inode.bpf.c. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17

struct sk_val {
	__u64 segments; /* data segments the established socket received */
	__u32 tag;      /* written by Python, read by the program */
	__u32 port;     /* remote port, written by the program */
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_val);
} skst SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

__u16 server_port;   /* host order */
__u32 sk_seen_tag;
__u16 xsk_port;      /* host order: UDP datagrams to this port go to xsks */
__u64 xsk_redirects;

/* Every segment a TCP socket in ESTABLISHED receives (tcp_rcv_established). Only
 * the server side of the test's connection (local port server_port) counts; its
 * storage is created on the first segment (F_CREATE) or by Python before. */
SEC("tp_btf/tcp_probe")
int BPF_PROG(on_tcp_probe, struct sock *sk, const struct sk_buff *skb)
{
	struct sk_val *v;

	if (!server_port || sk->__sk_common.skc_num != server_port)
		return 0;
	v = bpf_sk_storage_get(&skst, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!v)
		return 0;
	__sync_fetch_and_add(&v->segments, 1);
	v->port = bpf_ntohs(sk->__sk_common.skc_dport);
	sk_seen_tag = v->tag;
	return 0;
}

/* IPv4 UDP to xsk_port -> the AF_XDP socket of this rx queue; the rest (ARP...)
 * passes. */
SEC("xdp")
int to_xsk(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	if (!xsk_port || udp->dest != bpf_htons(xsk_port))
		return XDP_PASS;
	__sync_fetch_and_add(&xsk_redirects, 1);
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
