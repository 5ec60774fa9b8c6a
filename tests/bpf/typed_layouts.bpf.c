// SPDX-License-Identifier: GPL-2.0
/* Layouts for the BTF type model: padding, bitfields, nested arrays of structs,
 * unions, enums, floats, char arrays, unusual sizes. `fill` writes known values
 * (decoded by Python), `readback` reads what Python wrote and copies each field
 * into a u64 array, `layout` records offsetof/sizeof as clang laid them out. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum color { RED = 1, GREEN = 2, BLUE = 300 };
enum sneg { NEG = -5, POS = 7 };

struct inner {
	__u8 tag;
	__u32 val; /* 3 bytes of padding before */
};

struct flags {
	unsigned int a : 3;
	unsigned int b : 5;
	int c : 4;
	unsigned long long d : 40;
	__u8 e : 1;
};

union num {
	__u32 i;
	float f;
	__u8 b[4];
};

struct big {
	__u8 u8;
	__s8 s8;
	__u16 u16;
	__s16 s16;
	__u32 u32;
	__s32 s32;
	__u64 u64;
	__s64 s64;
	bool flag;
	char comm[16];
	__u8 mac[6];
	enum color color;
	enum sneg sneg;
	float f32;
	double f64;
	void *ptr;
	struct inner in;
	struct inner arr[3];
	__u32 grid[2][3];
	char names[2][8];
	union num un;
	struct flags bits;
	__u16 odd[3];
	__u8 tail;
};

struct pkey {
	__u8 proto;
	__u32 addr; /* padded */
	__u16 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct big);
} out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct big);
} in SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} readback SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} layout SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, struct pkey);
	__type(value, struct inner);
} byport SEC(".maps");

static __always_inline void put(void *m, __u32 i, __u64 v)
{
	bpf_map_update_elem(m, &i, &v, BPF_ANY);
}

#define OFF(f) __builtin_offsetof(struct big, f)

SEC("syscall")
int fill(void *ctx)
{
	__u32 k = 0;
	struct big *b = bpf_map_lookup_elem(&out, &k);
	struct pkey pk = {};
	struct inner iv = {};

	if (!b)
		return 1;
	b->u8 = 250;
	b->s8 = -100;
	b->u16 = 65000;
	b->s16 = -30000;
	b->u32 = 4000000000u;
	b->s32 = -2000000000;
	b->u64 = 18000000000000000000ull;
	b->s64 = -9000000000000000000ll;
	b->flag = true;
	__builtin_memcpy(b->comm, "kernel-side\0\0\0\0", 16);
	b->mac[0] = 0xde; b->mac[1] = 0xad; b->mac[2] = 0; b->mac[3] = 0; b->mac[4] = 0xbe; b->mac[5] = 0;
	b->color = BLUE;
	b->sneg = NEG;
	b->f32 = 1.5f;
	b->f64 = -2.25;
	b->ptr = (void *)0xffff888012345678ull;
	b->in.tag = 7;
	b->in.val = 0xdeadbeef;
	for (int i = 0; i < 3; i++) {
		b->arr[i].tag = i + 1;
		b->arr[i].val = (i + 1) * 1000;
	}
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 3; j++)
			b->grid[i][j] = i * 10 + j;
	__builtin_memcpy(b->names[0], "alpha\0\0\0", 8);
	__builtin_memcpy(b->names[1], "beta\0\0\0\0", 8);
	b->un.i = 0x3fc00000; /* 1.5f */
	b->bits.a = 5;
	b->bits.b = 17;
	b->bits.c = -3;
	b->bits.d = 0xabcdef1234ull;
	b->bits.e = 1;
	b->odd[0] = 1; b->odd[1] = 2; b->odd[2] = 65535;
	b->tail = 0x42;

	pk.proto = 6;
	pk.addr = 0x0100007f;
	pk.port = 443;
	iv.tag = 9;
	iv.val = 12345;
	bpf_map_update_elem(&byport, &pk, &iv, BPF_ANY);

	put(&layout, 0, sizeof(struct big));
	put(&layout, 1, OFF(u16));
	put(&layout, 2, OFF(u32));
	put(&layout, 3, OFF(u64));
	put(&layout, 4, OFF(flag));
	put(&layout, 5, OFF(comm));
	put(&layout, 6, OFF(mac));
	put(&layout, 7, OFF(color));
	put(&layout, 8, OFF(sneg));
	put(&layout, 9, OFF(f32));
	put(&layout, 10, OFF(f64));
	put(&layout, 11, OFF(ptr));
	put(&layout, 12, OFF(in));
	put(&layout, 13, OFF(arr));
	put(&layout, 14, OFF(grid));
	put(&layout, 15, OFF(names));
	put(&layout, 16, OFF(un));
	put(&layout, 17, OFF(bits));
	put(&layout, 18, OFF(odd));
	put(&layout, 19, OFF(tail));
	put(&layout, 20, sizeof(struct inner));
	put(&layout, 21, sizeof(struct flags));
	put(&layout, 22, sizeof(struct pkey));
	put(&layout, 23, __builtin_offsetof(struct pkey, port));
	put(&layout, 24, __builtin_offsetof(struct inner, val));
	return 0;
}

SEC("syscall")
int readback_in(void *ctx)
{
	__u32 k = 0;
	struct big *b = bpf_map_lookup_elem(&in, &k);

	if (!b)
		return 1;
	put(&readback, 0, b->u8);
	put(&readback, 1, (__u64)(__s64)b->s8);
	put(&readback, 2, b->u16);
	put(&readback, 3, (__u64)(__s64)b->s16);
	put(&readback, 4, b->u32);
	put(&readback, 5, (__u64)(__s64)b->s32);
	put(&readback, 6, b->u64);
	put(&readback, 7, (__u64)b->s64);
	put(&readback, 8, b->flag);
	put(&readback, 9, *(__u64 *)b->comm);
	put(&readback, 10, b->mac[5]);
	put(&readback, 11, b->color);
	put(&readback, 12, (__u64)(__s64)b->sneg);
	put(&readback, 13, b->in.val);
	put(&readback, 14, b->arr[2].tag);
	put(&readback, 15, b->arr[2].val);
	put(&readback, 16, b->grid[1][2]);
	put(&readback, 17, *(__u64 *)b->names[1]);
	put(&readback, 18, b->un.i);
	put(&readback, 19, b->bits.a);
	put(&readback, 20, b->bits.b);
	put(&readback, 21, (__u64)(__s64)b->bits.c);
	put(&readback, 22, b->bits.d);
	put(&readback, 23, b->bits.e);
	put(&readback, 24, b->odd[2]);
	put(&readback, 25, b->tail);
	put(&readback, 26, (__u64)b->ptr);
	put(&readback, 27, *(__u32 *)&b->f32);
	put(&readback, 28, *(__u64 *)&b->f64);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
