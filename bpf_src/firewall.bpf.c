// SPDX-License-Identifier: GPL-2.0
/* firewall: an XDP filter on source prefix (+ destination port), and a tc
 * egress counter.
 *
 * "rules" is an LPM trie keyed by (port, family, source address); a rule
 * covers a prefix of the source address for one destination port (TCP/UDP),
 * or for every port (port 0). A packet is looked up twice: with its own
 * destination port, then with port 0, so a port rule wins over an any-port
 * rule and, within each, the longest prefix wins. The rule's action (XDP_DROP
 * or XDP_PASS) applies and its per-CPU counter (packets, bytes) grows;
 * packets no rule matches pass and count under rule id 0.
 * "egress" counts what leaves the interface by (ethertype, IP protocol). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define MAX_RULES 1024
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TC_ACT_OK 0

struct fw_key {
	__u32 prefixlen;	/* 32 + source prefix length */
	__be16 port;		/* destination port, network order; 0 = any */
	__u8 family;		/* 4 or 6 */
	__u8 pad;
	__u8 addr[16];		/* source address (IPv4 in the first 4 bytes) */
};

struct fw_rule {
	__u32 id;		/* index in counters, 1..MAX_RULES-1 */
	__u32 action;		/* XDP_DROP or XDP_PASS */
};

/* A build may add counter fields (tests/bpf/firewall_v2.bpf.c does, to test a
 * live upgrade that migrates the counters): FIREWALL_COUNTER_EXTRA declares
 * them, FIREWALL_COUNT_EXTRA(c) updates them for each packet. */
#ifndef FIREWALL_COUNTER_EXTRA
#define FIREWALL_COUNTER_EXTRA
#define FIREWALL_COUNT_EXTRA(c)
#endif

struct counter {
	__u64 packets;
	__u64 bytes;
	FIREWALL_COUNTER_EXTRA
};

struct egress_key {
	__u16 eth_proto;	/* host order */
	__u8 ip_proto;		/* 0 unless IPv4/IPv6 */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MAX_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fw_key);
	__type(value, struct fw_rule);
} rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, struct counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 256);
	__type(key, struct egress_key);
	__type(value, struct counter);
} egress SEC(".maps");

static __always_inline void count(__u32 id, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&counters, &id);

	if (c) {
		c->packets++;
		c->bytes += bytes;
		FIREWALL_COUNT_EXTRA(c);
	}
}

SEC("xdp")
int firewall_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 len = data_end - data;
	struct ethhdr *eth = data;
	struct fw_key key = {};
	struct fw_rule *rule;
	void *l4 = NULL;
	__u8 proto = 0;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return XDP_PASS;
		key.family = 4;
		__builtin_memcpy(key.addr, &ip->saddr, 4);
		proto = ip->protocol;
		/* Only the first fragment has the ports. */
		if (!(ip->frag_off & bpf_htons(0x1FFF)))
			l4 = (void *)ip + ip->ihl * 4;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return XDP_PASS;
		key.family = 6;
		__builtin_memcpy(key.addr, &ip6->saddr, 16);
		proto = ip6->nexthdr;	/* extension headers: matched as any-port */
		l4 = ip6 + 1;
	} else {
		count(0, len);
		return XDP_PASS;
	}
	if (l4 && (proto == IPPROTO_TCP || proto == IPPROTO_UDP)) {
		struct udphdr *uh = l4;	/* dest is at the same offset in TCP */

		if ((void *)(uh + 1) <= data_end)
			key.port = uh->dest;
	}
	rule = NULL;
	if (key.port) {
		key.prefixlen = 32 + (key.family == 4 ? 32 : 128);
		rule = bpf_map_lookup_elem(&rules, &key);
	}
	if (!rule) {
		key.port = 0;
		key.prefixlen = 32 + (key.family == 4 ? 32 : 128);
		rule = bpf_map_lookup_elem(&rules, &key);
	}
	if (!rule) {
		count(0, len);
		return XDP_PASS;
	}
	count(rule->id < MAX_RULES ? rule->id : 0, len);
	return rule->action == XDP_DROP ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int firewall_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct egress_key key = {};
	struct counter *c, init = {};

	key.eth_proto = bpf_ntohs(skb->protocol);
	if (key.eth_proto == ETH_P_IP) {
		struct iphdr *ip = data + sizeof(struct ethhdr);

		if ((void *)(ip + 1) <= data_end)
			key.ip_proto = ip->protocol;
	} else if (key.eth_proto == ETH_P_IPV6) {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

		if ((void *)(ip6 + 1) <= data_end)
			key.ip_proto = ip6->nexthdr;
	}
	c = bpf_map_lookup_elem(&egress, &key);
	if (!c) {
		bpf_map_update_elem(&egress, &key, &init, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&egress, &key);
		if (!c)
			return TC_ACT_OK;
	}
	c->packets++;
	c->bytes += skb->len;
	FIREWALL_COUNT_EXTRA(c);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "GPL";
