// SPDX-License-Identifier: GPL-2.0
/* Scalars of every kind in one struct, for the C single-key path (pybpf/_mapops.c):
 * `fill` writes extreme values into scal[1] and cnt[7]; `readback` copies each field
 * of scal[2] (written by Python) into back[0..11] as u64. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum mo_color { MO_RED = 1, MO_BLUE = 300 };

struct scal {
	__u8 u8;
	__s8 s8;
	__u16 u16;
	__s16 s16;
	__u32 u32;
	__s32 s32;
	__u64 u64;
	__s64 s64;
	bool flag;
	enum mo_color color;
	float f32;
	double f64;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, struct scal);
} scal SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u64);
	__type(value, __s64);
} cnt SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 12);
	__type(key, __u32);
	__type(value, __u64);
} back SEC(".maps");

SEC("xdp")
int fill(struct xdp_md *ctx)
{
	__u32 k = 1;
	__u64 ck = 7;
	__s64 cv = -1234567890123LL;
	struct scal s = {
		.u8 = 255, .s8 = -128, .u16 = 65535, .s16 = -32768,
		.u32 = 4294967295U, .s32 = -2147483647 - 1,
		.u64 = 18446744073709551615ULL, .s64 = -9223372036854775807LL - 1,
		.flag = 1, .color = MO_BLUE,
	};
	/* floats as bit patterns (no FP in BPF): 1.5f and -2.25 */
	__builtin_memcpy(&s.f32, &(__u32){0x3fc00000}, 4);
	__builtin_memcpy(&s.f64, &(__u64){0xc002000000000000ULL}, 8);
	bpf_map_update_elem(&scal, &k, &s, BPF_ANY);
	bpf_map_update_elem(&cnt, &ck, &cv, BPF_ANY);
	return XDP_PASS;
}

static __always_inline void put(__u32 i, __u64 v)
{
	bpf_map_update_elem(&back, &i, &v, BPF_ANY);
}

SEC("xdp")
int readback(struct xdp_md *ctx)
{
	__u32 k = 2;
	struct scal *s = bpf_map_lookup_elem(&scal, &k);
	__u32 f32;
	__u64 f64;

	if (!s)
		return XDP_ABORTED;
	__builtin_memcpy(&f32, &s->f32, 4);
	__builtin_memcpy(&f64, &s->f64, 8);
	put(0, s->u8);
	put(1, (__u64)(__s64)s->s8);
	put(2, s->u16);
	put(3, (__u64)(__s64)s->s16);
	put(4, s->u32);
	put(5, (__u64)(__s64)s->s32);
	put(6, s->u64);
	put(7, (__u64)s->s64);
	put(8, s->flag);
	put(9, s->color);
	put(10, f32);
	put(11, f64);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
