// SPDX-License-Identifier: GPL-2.0
/* Program-level options: verifier logs of successful loads, attach targets set
 * at run time (SEC("tp_btf") / SEC("fentry") name none), and a flow dissector
 * attached to a network namespace. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define IPPROTO_UDP 17

__u32 target_tgid;
__u64 execs;       /* sched_process_exec of target_tgid's children */
__u32 last_exec_pid;
__u64 getppids;
__u16 target_port; /* host order */
__u64 dissected;   /* UDP packets to target_port the flow dissector saw */

/* A small program whose verifier log the tests read. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int logged(void *ctx)
{
	if ((bpf_get_current_pid_tgid() >> 32) == target_tgid)
		__sync_fetch_and_add(&getppids, 1);
	return 0;
}

/* No target in the section: bpf_program__set_attach_target() must name one. The
 * arguments are those of sched_process_exec, which the verifier checks against
 * the target's BTF at load. */
SEC("tp_btf")
int BPF_PROG(retarget, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	if (p->real_parent->tgid != target_tgid)
		return 0;
	last_exec_pid = p->tgid;
	__sync_fetch_and_add(&execs, 1);
	return 0;
}

SEC("fentry")
int BPF_PROG(retarget_fentry)
{
	__sync_fetch_and_add(&execs, 1);
	return 0;
}

/* freplace: xdp_target's verdict comes from a global function that an extension
 * program (SEC("freplace"), target set at run time) can replace. */
__noinline int pybpf_verdict(struct xdp_md *ctx)
{
	return ctx ? XDP_PASS : XDP_ABORTED;
}

SEC("xdp")
int xdp_target(struct xdp_md *ctx)
{
	return pybpf_verdict(ctx);
}

SEC("freplace")
int new_verdict(struct xdp_md *ctx)
{
	return XDP_DROP;
}

/* A header at off: in the packet (test runs have no skb, only data/data_end),
 * else copied into buf by bpf_skb_load_bytes (headers beyond the linear part). */
static __always_inline void *header(struct __sk_buff *skb, __u16 off, __u32 size, void *buf)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	void *p;

	if (off > 0xffff - size) /* lets the verifier bound p + size */
		return NULL;
	p = data + off;
	if (p + size <= end)
		return p;
	if (bpf_skb_load_bytes(skb, off, buf, size))
		return NULL;
	return buf;
}

/* IPv4 + UDP flow dissector: fills the flow keys the kernel asks for and counts
 * datagrams to target_port. */
SEC("flow_dissector")
int dissect(struct __sk_buff *skb)
{
	struct bpf_flow_keys *keys = skb->flow_keys;
	struct iphdr ipbuf, *ip;
	struct udphdr udpbuf, *udp;

	if (keys->n_proto != bpf_htons(ETH_P_IP))
		return BPF_DROP;
	ip = header(skb, keys->nhoff, sizeof(*ip), &ipbuf);
	if (!ip || ip->ihl < 5)
		return BPF_DROP;
	keys->addr_proto = ETH_P_IP;
	keys->ipv4_src = ip->saddr;
	keys->ipv4_dst = ip->daddr;
	keys->ip_proto = ip->protocol;
	keys->thoff = keys->nhoff + ip->ihl * 4;
	if (ip->frag_off & bpf_htons(0x3fff)) {
		keys->is_frag = 1;
		return BPF_OK;
	}
	if (ip->protocol != IPPROTO_UDP)
		return BPF_OK;
	udp = header(skb, keys->thoff, sizeof(*udp), &udpbuf);
	if (!udp)
		return BPF_DROP;
	keys->sport = udp->source;
	keys->dport = udp->dest;
	if (target_port && udp->dest == bpf_htons(target_port))
		__sync_fetch_and_add(&dissected, 1);
	return BPF_OK;
}

char LICENSE[] SEC("license") = "GPL";
