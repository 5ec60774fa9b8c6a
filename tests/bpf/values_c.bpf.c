// SPDX-License-Identifier: GPL-2.0
/* Struct values converted in C (pybpf/_fastpath.c, pybpf/_native/values.c), checked
 * against the kernel: `readback` copies every field of what Python wrote (in each map
 * kind, on every CPU for the per-CPU ones) into `out` as plain u64s, and `fill` writes
 * known values (different on every CPU) for Python to decode.  Run with
 * BPF_PROG_TEST_RUN on a dummy packet. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum vc_color { VC_RED = 1, VC_GREEN = 2, VC_BLUE = 300 };

struct rec {
	__u64 a;
	__s32 b;
	__u16 c;
	__u8 d;
	bool e;
	enum vc_color col;
	__s64 f;
	double g;
}; /* 40 bytes */

#define MAXCPU 64
#define OUT_H 0			/* h[1] */
#define OUT_ARR 8		/* arr[1] */
#define OUT_PH 16		/* ph[1], CPU i at OUT_PH + 8 * i */
#define OUT_PA (OUT_PH + 8 * MAXCPU)	/* pa[0], likewise */

#define MAP(kind, mname, n)				\
	struct {					\
		__uint(type, kind);			\
		__uint(max_entries, n);			\
		__type(key, __u32);			\
		__type(value, struct rec);		\
	} mname SEC(".maps")

MAP(BPF_MAP_TYPE_HASH, h, 16);
MAP(BPF_MAP_TYPE_ARRAY, arr, 4);
MAP(BPF_MAP_TYPE_PERCPU_HASH, ph, 4);
MAP(BPF_MAP_TYPE_PERCPU_ARRAY, pa, 2);

struct kkey {
	__u32 ip;
	__u16 port;
	__u8 proto;
	__s8 zone;
}; /* 8 bytes */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, struct kkey);
	__type(value, __u64);
} kh SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __s16);
	__type(value, __u64);
} sk SEC(".maps");

__u64 kh_seen = -1;	/* kh[{0x0a000001, 8080, 6, -3}] as readback found it */
__u64 sk_seen = -1;	/* sk[-5] */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, OUT_PA + 8 * MAXCPU);
	__type(key, __u32);
	__type(value, __u64);
} out SEC(".maps");

__u32 ph_cpus;		/* CPUs readback saw in ph[1] */
__u32 pa_cpus;		/* ... and in pa[0] */
__u32 misses;		/* h[1] or arr[1] absent */

static __always_inline void put(__u32 i, __u64 v)
{
	bpf_map_update_elem(&out, &i, &v, BPF_ANY);
}

static __always_inline void rec_out(__u32 base, const struct rec *r)
{
	put(base + 0, r->a);
	put(base + 1, (__u64)(__s64)r->b);
	put(base + 2, r->c);
	put(base + 3, r->d);
	put(base + 4, r->e);
	put(base + 5, r->col);
	put(base + 6, (__u64)r->f);
	put(base + 7, *(const __u64 *)&r->g);	/* the double's bits */
}

SEC("xdp")
int readback(struct xdp_md *ctx)
{
	__u32 one = 1, zero = 0, cpu;
	struct rec *r;

	misses = 0;
	r = bpf_map_lookup_elem(&h, &one);
	if (r)
		rec_out(OUT_H, r);
	else
		misses++;
	r = bpf_map_lookup_elem(&arr, &one);
	if (r)
		rec_out(OUT_ARR, r);
	else
		misses++;
	{
		struct kkey k = { .ip = 0x0a000001, .port = 8080, .proto = 6, .zone = -3 };
		__s16 sk_key = -5;
		__u64 *v = bpf_map_lookup_elem(&kh, &k);

		kh_seen = v ? *v : -1;
		v = bpf_map_lookup_elem(&sk, &sk_key);
		sk_seen = v ? *v : -1;
	}
	ph_cpus = pa_cpus = 0;
	for (cpu = 0; cpu < MAXCPU; cpu++) {
		r = bpf_map_lookup_percpu_elem(&ph, &one, cpu);
		if (!r)
			break;
		rec_out(OUT_PH + 8 * cpu, r);
		ph_cpus++;
	}
	for (cpu = 0; cpu < MAXCPU; cpu++) {
		r = bpf_map_lookup_percpu_elem(&pa, &zero, cpu);
		if (!r)
			break;
		rec_out(OUT_PA + 8 * cpu, r);
		pa_cpus++;
	}
	return XDP_PASS;
}

/* h[2] = known extremes; pa[1] and ph[2] (created by Python) on CPU i: a = 1000 * i + 7,
 * b = -i - 1, col = VC_GREEN; their other fields stay as Python wrote them. */
SEC("xdp")
int fill(struct xdp_md *ctx)
{
	struct rec v = {
		.a = 0xfedcba9876543210ULL, .b = -2147483647 - 1, .c = 65535, .d = 255,
		.e = 1, .col = VC_BLUE, .f = -(1LL << 62),
	};
	__u32 one = 1, two = 2, cpu;
	struct rec *r;

	*(__u64 *)&v.g = 0x4004000000000000ULL;	/* 2.5 */
	bpf_map_update_elem(&h, &two, &v, BPF_ANY);
	for (cpu = 0; cpu < MAXCPU; cpu++) {
		r = bpf_map_lookup_percpu_elem(&pa, &one, cpu);
		if (!r)
			break;
		r->a = 1000 * cpu + 7;
		r->b = -(__s32)cpu - 1;
		r->col = VC_GREEN;
	}
	for (cpu = 0; cpu < MAXCPU; cpu++) {
		r = bpf_map_lookup_percpu_elem(&ph, &two, cpu);
		if (!r)
			break;
		r->a = 1000 * cpu + 7;
		r->b = -(__s32)cpu - 1;
		r->col = VC_GREEN;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
