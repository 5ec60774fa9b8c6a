// SPDX-License-Identifier: GPL-2.0
/* The layouts pybpf's Python codecs (pybpf/types.py) convert member by member or with
 * generated code, not in C: bitfields of every kind (signed, enum, bool, crossing
 * bytes, 40 bits wide), 128-bit integers, unions holding structs and arrays, arrays of
 * bools, enums, signed shorts, floats, pointers, bitfield structs and unions, anonymous
 * members, and a flat struct whose arrays keep it out of C.
 *
 * `fill` writes known values into gen_out/flat_out (and the globals g_gen, g_flat),
 * `readback` copies each field of gen_in/flat_in as the kernel reads it into a u64 of
 * `rb`, and `layout` records offsetof/sizeof as clang laid them out. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

enum mode { M_OFF = 0, M_ON = 1, M_AUTO = 2, M_TOP = 7 };
enum wide64 { W_SMALL = 1, W_BIG = 0x1ffffffffULL };
enum sgn { S_MIN = -128, S_ONE = 1 };

struct bf {
	int s3 : 3;
	unsigned int u5 : 5;
	enum mode m : 3;
	_Bool flag : 1;
	unsigned int cross : 12;
	long long s40 : 40;
	unsigned long long u23 : 23;
	__u8 last : 1;
};

struct pair {
	__u16 lo;
	__u16 hi;
};

union u {
	struct pair parts;
	__u32 whole;
	__s8 sb[4];
};

struct gen {
	__u8 tag;
	struct bf b;
	struct bf bfs[2];
	union u un;
	union u uns[2];
	union {
		__u32 ax;
		float af;
	};
	__int128 s128;
	unsigned __int128 u128;
	_Bool bools[3];
	enum mode modes[3];
	enum wide64 w64;
	enum sgn sg;
	__s16 shorts[3];
	float floats[2];
	void *ptrs[2];
	__s8 sbytes[4];
	char chars[2][5];
};

struct flat {
	__u8 a;
	_Bool bools[3];
	enum mode modes[2];
	char name[6];
	struct pair pairs[2];
	__s16 s[2];
	double d;
	__u32 tail;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen);
} gen_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct gen);
} gen_in SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct flat);
} flat_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct flat);
} flat_in SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, struct pair);
	__type(value, enum mode);
} by_pair SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, __u64);
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 32);
	__type(key, __u32);
	__type(value, __u64);
} layout SEC(".maps");

struct lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6);
	__type(value, __u32);
} routes6 SEC(".maps");

/* C member names that clash once made attributes: in -> in_, so in_ -> in__ */
struct clash {
	__u32 in;
	__u32 in_;
	__u32 _fields;
};

struct clash g_clash = {};
bool g_flag = false;
__u64 g_flag_seen = 0;

struct gen g_gen = {};
struct flat g_flat = {};
__u8 one_byte SEC(".data.one") = 3; /* a section of 1 byte: its mmap is one page */

static __always_inline void put(__u32 i, __u64 v)
{
	bpf_map_update_elem(&rb, &i, &v, BPF_ANY);
}

static __always_inline void lay(__u32 i, __u64 v)
{
	bpf_map_update_elem(&layout, &i, &v, BPF_ANY);
}

static __always_inline void fill_bf(struct bf *b, int k)
{
	b->s3 = k ? 3 : -4;
	b->u5 = k ? 0 : 31;
	b->m = k ? M_TOP : M_AUTO;
	b->flag = !k;
	b->cross = k ? 0x001 : 0xabc;
	b->s40 = k ? (1LL << 39) - 1 : -(1LL << 39);
	b->u23 = k ? 1 : 0x7fffff;
	b->last = !k;
}

static __always_inline void fill_gen(struct gen *g)
{
	g->tag = 0x5a;
	fill_bf(&g->b, 0);
	fill_bf(&g->bfs[0], 1);
	fill_bf(&g->bfs[1], 0);
	g->un.parts.lo = 0x1234;
	g->un.parts.hi = 0xfedc;
	g->uns[0].whole = 0x80402010;
	g->uns[1].sb[0] = -1;
	g->uns[1].sb[1] = 0;
	g->uns[1].sb[2] = 127;
	g->uns[1].sb[3] = -128;
	g->af = 2.5f;
	g->s128 = -((__int128)1 << 100) - 7;
	g->u128 = ((unsigned __int128)1 << 127) + 5;
	g->bools[0] = 1;
	g->bools[1] = 0;
	g->bools[2] = 1;
	g->modes[0] = M_TOP;
	g->modes[1] = (enum mode)5; /* no enumerator */
	g->modes[2] = M_ON;
	g->w64 = W_BIG;
	g->sg = S_MIN;
	g->shorts[0] = -32768;
	g->shorts[1] = 32767;
	g->shorts[2] = -1;
	g->floats[0] = -0.5f;
	g->floats[1] = 1e30f;
	g->ptrs[0] = (void *)0xffffffffffffffffULL;
	g->ptrs[1] = (void *)0x1000;
	g->sbytes[0] = -128;
	g->sbytes[1] = 127;
	g->sbytes[2] = 0;
	g->sbytes[3] = 0;
	__builtin_memcpy(g->chars[0], "ab\0\0\0", 5);
	__builtin_memcpy(g->chars[1], "cdefg", 5);
}

static __always_inline void fill_flat(struct flat *f, __u32 k)
{
	f->a = 200 + k;
	f->bools[0] = 0;
	f->bools[1] = 1;
	f->bools[2] = k & 1;
	f->modes[0] = M_AUTO;
	f->modes[1] = (enum mode)(6 + k); /* 6: none, 7: M_TOP */
	__builtin_memcpy(f->name, "flat\0\0", 6);
	f->name[4] = '0' + k;
	f->pairs[0].lo = 1 + k;
	f->pairs[0].hi = 2;
	f->pairs[1].lo = 65535;
	f->pairs[1].hi = 4 * k;
	f->s[0] = -2 - k;
	f->s[1] = 300;
	f->d = k == 0 ? -1.25 : k == 1 ? 0.375 : 1e300;
	f->tail = 0xdeadbeef - k;
}

SEC("syscall")
int fill(void *ctx)
{
	__u32 z = 0;
	struct gen *g = bpf_map_lookup_elem(&gen_out, &z);
	struct flat f;
	struct pair p;
	enum mode md;

	if (!g)
		return 1;
	fill_gen(g);
	fill_gen(&g_gen);
	fill_flat(&g_flat, 0);
	one_byte += 1;
	g_clash.in = 1;
	g_clash.in_ = 2;
	g_clash._fields = 3;
	g_flag_seen = g_flag ? 0xf1 : 0xf0;
	for (__u32 k = 0; k < 3; k++) {
		__builtin_memset(&f, 0, sizeof(f));
		fill_flat(&f, k);
		bpf_map_update_elem(&flat_out, &k, &f, BPF_ANY);
		p.lo = k;
		p.hi = 0xa000 + k;
		md = k == 2 ? (enum mode)4 : (enum mode)k;
		bpf_map_update_elem(&by_pair, &p, &md, BPF_ANY);
	}
	lay(0, sizeof(struct gen));
	lay(1, __builtin_offsetof(struct gen, b));
	lay(2, __builtin_offsetof(struct gen, un));
	lay(3, __builtin_offsetof(struct gen, s128));
	lay(4, __builtin_offsetof(struct gen, bools));
	lay(5, __builtin_offsetof(struct gen, chars));
	lay(6, sizeof(struct bf));
	lay(7, sizeof(struct flat));
	lay(8, __builtin_offsetof(struct flat, d));
	lay(9, __builtin_offsetof(struct gen, ax));
	return 0;
}

static __always_inline void put_bf(__u32 i, struct bf *b)
{
	put(i, (__u64)(__s64)b->s3);
	put(i + 1, b->u5);
	put(i + 2, b->m);
	put(i + 3, b->flag);
	put(i + 4, b->cross);
	put(i + 5, (__u64)(__s64)b->s40);
	put(i + 6, b->u23);
	put(i + 7, b->last);
}

SEC("syscall")
int readback(void *ctx)
{
	__u32 z = 0;
	struct gen *g = bpf_map_lookup_elem(&gen_in, &z);
	struct flat *f = bpf_map_lookup_elem(&flat_in, &z);

	if (!g || !f)
		return 1;
	put(0, g->tag);
	put_bf(1, &g->b);      /* 1..8 */
	put_bf(9, &g->bfs[0]); /* 9..16 */
	put_bf(17, &g->bfs[1]); /* 17..24 */
	put(25, g->un.whole);
	put(26, g->uns[0].whole);
	put(27, g->uns[1].whole);
	put(28, g->ax);
	put(29, (__u64)g->s128);
	put(30, (__u64)(g->s128 >> 64));
	put(31, (__u64)g->u128);
	put(32, (__u64)(g->u128 >> 64));
	put(33, g->bools[0] | g->bools[1] << 1 | g->bools[2] << 2);
	put(34, g->modes[0]);
	put(35, g->modes[1]);
	put(36, g->modes[2]);
	put(37, g->w64);
	put(38, (__u64)(__s64)g->sg);
	put(39, (__u64)(__s64)g->shorts[0]);
	put(40, (__u64)(__s64)g->shorts[1]);
	put(41, (__u64)(__s64)g->shorts[2]);
	put(42, *(__u32 *)&g->floats[0]);
	put(43, *(__u32 *)&g->floats[1]);
	put(44, (__u64)g->ptrs[0]);
	put(45, (__u64)g->ptrs[1]);
	put(46, *(__u32 *)g->sbytes);
	put(47, *(__u32 *)g->chars[0] | (__u64)g->chars[0][4] << 32);
	put(48, *(__u32 *)g->chars[1] | (__u64)g->chars[1][4] << 32);

	put(60, f->a);
	put(61, f->bools[0] | f->bools[1] << 1 | f->bools[2] << 2);
	put(62, f->modes[0]);
	put(63, f->modes[1]);
	put(64, *(__u32 *)f->name | (__u64)f->name[4] << 32 | (__u64)f->name[5] << 40);
	put(65, f->pairs[0].lo | f->pairs[0].hi << 16);
	put(66, f->pairs[1].lo | f->pairs[1].hi << 16);
	put(67, (__u64)(__s64)f->s[0]);
	put(68, (__u64)(__s64)f->s[1]);
	put(69, *(__u64 *)&f->d);
	put(70, f->tail);
	return 0;
}

/* LPM tries are not for sleepable (syscall) programs: these two run as XDP */
SEC("xdp")
int lpm_fill(struct xdp_md *ctx)
{
	{
		/* 2001:db8::/32 -> 1, ::1/128 -> 2 */
		struct lpm_v6 k = { .prefixlen = 32, .addr = { 0x20, 0x01, 0x0d, 0xb8 } };
		__u32 v = 1;

		bpf_map_update_elem(&routes6, &k, &v, BPF_ANY);
		__builtin_memset(&k, 0, sizeof(k));
		k.prefixlen = 128;
		k.addr[15] = 1;
		v = 2;
		bpf_map_update_elem(&routes6, &k, &v, BPF_ANY);
	}
	return XDP_PASS;
}

SEC("xdp")
int lpm_probe(struct xdp_md *ctx)
{
	{
		/* what routes6 gives fe80::1 and 2001:db8:1::5 (longest prefix) */
		struct lpm_v6 q = { .prefixlen = 128, .addr = { 0xfe, 0x80 } };
		__u32 *v;

		q.addr[15] = 1;
		v = bpf_map_lookup_elem(&routes6, &q);
		put(50, v ? *v : 0xffff);
		__builtin_memset(&q, 0, sizeof(q));
		q.prefixlen = 128;
		q.addr[0] = 0x20; q.addr[1] = 0x01; q.addr[2] = 0x0d; q.addr[3] = 0xb8;
		q.addr[5] = 1; q.addr[15] = 5;
		v = bpf_map_lookup_elem(&routes6, &q);
		put(51, v ? *v : 0xffff);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
