// SPDX-License-Identifier: GPL-2.0
/* Hooks whose section names are newer than libbpf 1.1 (pybpf registers them):
 * tcx (two programs that show their run order through skb->mark), tc/ingress,
 * netkit, uprobe.multi / uretprobe.multi / uprobe.session with cookies,
 * kprobe.multi / kretprobe.multi / kprobe.session, netfilter, an iterator with
 * parameters, a perf_event program reading its cookie, and two tracepoint
 * counters for link update. Counters are (hook, key) -> hits (attach_common.h). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_tracing.h>
#include "attach_common.h"

#define ETH_P_IP 0x0800
#define TCX_NEXT -1
#define NF_ACCEPT 1
#define MARK_A 0xA1
#define MARK_B 0xB2

enum {
	TCX_A = 1, TCX_B = 2, B_AFTER_A = 3, A_AFTER_B = 4, TC_ALIAS = 5,
	UMULTI = 10, URET = 11, USESS_ENTRY = 12, USESS_RETURN = 13,
	KMULTI = 20, KRET = 21, KSESS = 22,
	NF_SEEN = 30, NF_SEEN_DEFRAG = 31,
	UPD_A = 40, UPD_B = 41,
	PERF_COOKIE = 50, NETKIT = 60,
};

/* target[0]: the process whose events count (0: every process); set after load */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} target SEC(".maps");

extern bool bpf_session_is_return(void) __ksym __weak;

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

SEC("tcx/ingress")
int tcx_a(struct __sk_buff *skb)
{
	__u32 port = eth_udp_dport((void *)(long)skb->data, (void *)(long)skb->data_end);

	if (!port)
		return TCX_NEXT;
	hit(TCX_A, port);
	if (skb->mark == MARK_B)
		hit(A_AFTER_B, port);
	asm volatile("" : "+r"(skb)); /* keep the ctx pointer unmodified for the store */
	skb->mark = MARK_A;
	return TCX_NEXT;
}

SEC("tcx/ingress")
int tcx_b(struct __sk_buff *skb)
{
	__u32 port = eth_udp_dport((void *)(long)skb->data, (void *)(long)skb->data_end);

	if (!port)
		return TCX_NEXT;
	hit(TCX_B, port);
	if (skb->mark == MARK_A)
		hit(B_AFTER_A, port);
	asm volatile("" : "+r"(skb));
	skb->mark = MARK_B;
	return TCX_NEXT;
}

SEC("tc/egress")
int tc_alias(struct __sk_buff *skb)
{
	__u32 port = eth_udp_dport((void *)(long)skb->data, (void *)(long)skb->data_end);

	if (port)
		hit(TC_ALIAS, port);
	return TCX_NEXT;
}

SEC("netkit/primary")
int nk_primary(struct __sk_buff *skb)
{
	hit(NETKIT, 0);
	return TCX_NEXT;
}

SEC("netkit/peer")
int nk_peer(struct __sk_buff *skb)
{
	hit(NETKIT, 1);
	return TCX_NEXT;
}

static __always_inline int ours(void)
{
	__u32 zero = 0, *t = bpf_map_lookup_elem(&target, &zero);

	return t && (*t == 0 || *t == current_pid());
}

SEC("uprobe.multi")
int umulti(struct pt_regs *ctx)
{
	if (ours())
		hit(UMULTI, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("uretprobe.multi")
int uret(struct pt_regs *ctx)
{
	if (ours()) {
		hit(URET, bpf_get_attach_cookie(ctx));
		put(URET, bpf_get_attach_cookie(ctx), PT_REGS_RC(ctx));
	}
	return 0;
}

SEC("uprobe.session")
int usess(struct pt_regs *ctx)
{
	if (!ours())
		return 1; /* no return probe for other processes */
	if (bpf_session_is_return())
		hit(USESS_RETURN, bpf_get_attach_cookie(ctx));
	else
		hit(USESS_ENTRY, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("kprobe.multi")
int kmulti(struct pt_regs *ctx)
{
	if (ours())
		hit(KMULTI, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("kretprobe.multi")
int kret(struct pt_regs *ctx)
{
	if (ours())
		hit(KRET, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("kprobe.session")
int ksess(struct pt_regs *ctx)
{
	if (ours())
		hit(KSESS, bpf_get_attach_cookie(ctx));
	return 0;
}

static __always_inline __u32 nf_udp_dport(struct bpf_nf_ctx *ctx)
{
	struct sk_buff *skb = ctx->skb;
	struct iphdr ip;
	struct udphdr udp;
	unsigned char *data = skb->data;

	if (bpf_probe_read_kernel(&ip, sizeof(ip), data))
		return 0;
	if (ip.version != 4 || ip.protocol != IPPROTO_UDP)
		return 0;
	if (bpf_probe_read_kernel(&udp, sizeof(udp), data + ip.ihl * 4))
		return 0;
	return bpf_ntohs(udp.dest);
}

SEC("netfilter")
int nf_count(struct bpf_nf_ctx *ctx)
{
	__u32 port = nf_udp_dport(ctx);

	if (port)
		hit(NF_SEEN, port);
	return NF_ACCEPT;
}

SEC("netfilter")
int nf_count_defrag(struct bpf_nf_ctx *ctx)
{
	__u32 port = nf_udp_dport(ctx);

	if (port) {
		hit(NF_SEEN_DEFRAG, port);
		put(NF_SEEN_DEFRAG, port, ctx->skb->len);
	}
	return NF_ACCEPT;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int upd_a(void *ctx)
{
	if (ours())
		hit(UPD_A, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int upd_b(void *ctx)
{
	if (ours())
		hit(UPD_B, 0);
	return 0;
}

SEC("perf_event")
int perf_cookie(struct bpf_perf_event_data *ctx)
{
	if (ours())
		put(PERF_COOKIE, 0, bpf_get_attach_cookie(ctx));
	return 0;
}

SEC("iter/task")
int task_tids(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (task)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%d %d\n", task->tgid, task->pid);
	return 0;
}

SEC("iter/cgroup")
int cgroup_ids(struct bpf_iter__cgroup *ctx)
{
	struct cgroup *cgrp = ctx->cgroup;

	if (cgrp)
		BPF_SEQ_PRINTF(ctx->meta->seq, "%llu\n", cgrp->kn->id);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
