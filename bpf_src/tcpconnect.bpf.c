// SPDX-License-Identifier: GPL-2.0
/* tcpconnect: one event per active TCP connect (IPv4 and IPv6).
 *
 * Two hooks; Python loads one, chosen by probing the kernel:
 *  - tracepoints sock:inet_sock_set_state (CLOSE -> SYN_SENT, made by
 *    tcp_v{4,6}_connect() in the connecting task) + syscalls:sys_exit_connect
 *    (for the source port and the result);
 *  - fexit tcp_v4_connect / tcp_v6_connect (BPF trampolines), on success.
 * Filters (.rodata): targ_dport, targ_uid and pybpf_scope.h's scope. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "pybpf_common.h"
#include "pybpf_scope.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

struct event {
	__u32 pid;
	__u32 tid;
	__u32 uid;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__s32 ret;
	__u64 cgroup_id;
	__u64 ts;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

struct pending {
	const void *sk;
	struct event ev;
};

const volatile __u16 targ_dport = 0;
const volatile __u32 targ_uid = (__u32)-1;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");
PYBPF_EVENT_TYPE(events, struct event);

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct pending);
} pending SEC(".maps");

static __always_inline struct event *begin(__u16 dport)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct event *e;

	if (targ_dport && targ_dport != dport)
		return NULL;
	if (targ_uid != (__u32)-1 && targ_uid != uid)
		return NULL;
	if (!pybpf_in_scope(id >> 32))
		return NULL;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		pybpf_count_drop();
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->uid = uid;
	e->dport = dport;
	e->cgroup_id = bpf_get_current_cgroup_id();
	e->ts = bpf_ktime_get_ns();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

/* The socket's addresses (sizes explicit: BPF_CORE_READ_INTO would copy
 * sizeof(*dst), one byte of an array). */
static __always_inline void read_addrs(struct event *e, struct sock *sk)
{
	if (e->family == AF_INET) {
		bpf_core_read(e->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(e->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/* Tracepoint variant, part 1: the CLOSE -> SYN_SENT transition names the
 * socket and the connecting task, but the source port may not be chosen yet
 * (inet_hash_connect() runs right after), so the event waits for the connect
 * syscall to return and then reads the socket. */
SEC("tracepoint/sock/inet_sock_set_state")
int tcpconnect_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct pending p = {};

	if (ctx->protocol != IPPROTO_TCP || ctx->newstate != TCP_SYN_SENT ||
	    ctx->oldstate != TCP_CLOSE)
		return 0;
	if (targ_dport && targ_dport != ctx->dport)
		return 0;
	if (targ_uid != (__u32)-1 && targ_uid != uid)
		return 0;
	if (!pybpf_in_scope(id >> 32))
		return 0;
	p.sk = ctx->skaddr;
	p.ev.pid = id >> 32;
	p.ev.tid = tid;
	p.ev.uid = uid;
	p.ev.family = ctx->family;
	p.ev.sport = ctx->sport;
	p.ev.dport = ctx->dport;
	p.ev.cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(p.ev.comm, sizeof(p.ev.comm));
	bpf_map_update_elem(&pending, &tid, &p, BPF_ANY);
	return 0;
}

/* Tracepoint variant, part 2: connect(2) returned (0, -EINPROGRESS or an
 * error): emit the event with the socket's addresses and the result. */
SEC("tracepoint/syscalls/sys_exit_connect")
int tcpconnect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct pending *p;
	struct event *e;
	struct sock *sk;

	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		pybpf_count_drop();
		goto cleanup;
	}
	__builtin_memcpy(e, &p->ev, sizeof(*e));
	e->ret = ctx->ret;
	e->ts = bpf_ktime_get_ns();
	/* Addresses and port from the socket itself, complete by now (the
	 * tracepoint's address fields read back wrong on 6.1 kernels). */
	sk = (struct sock *)p->sk;
	e->sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	read_addrs(e, sk);
	bpf_ringbuf_submit(e, 0);
cleanup:
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

static __always_inline int from_sock(struct sock *sk, int ret, __u16 family)
{
	struct event *e;
	__u16 dport;

	if (ret)
		return 0;
	dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e = begin(dport);
	if (!e)
		return 0;
	e->family = family;
	e->sport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	read_addrs(e, sk);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("fexit/tcp_v4_connect")
int BPF_PROG(tcpconnect_v4_fexit, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	return from_sock(sk, ret, AF_INET);
}

SEC("fexit/tcp_v6_connect")
int BPF_PROG(tcpconnect_v6_fexit, struct sock *sk, struct sockaddr *uaddr, int addr_len, int ret)
{
	return from_sock(sk, ret, AF_INET6);
}

char LICENSE[] SEC("license") = "GPL";
