// SPDX-License-Identifier: GPL-2.0
/* C struct members named like Python keywords, dunders and the generated
 * class's own attributes: typed access must keep every one of them distinct.
 * Run with BPF_PROG_TEST_RUN: `derive` reads names[1] (written by Python)
 * and writes names[2] = every member plus its ordinal (1..9); `fill` writes
 * names[3] with the ordinals themselves, so expected values come from the
 * kernel side. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct odd_names {
	__u32 in;
	__u32 class;
	__u64 __init__;
	__u64 __slots__;
	__u32 _asdict;
	__u32 _fields;
	__u32 __class__;
	__u32 def;
	__u64 in_;	/* what a renamed `in` would be called */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct odd_names);
} names SEC(".maps");

SEC("xdp")
int derive(struct xdp_md *ctx)
{
	__u32 k1 = 1, k2 = 2;
	struct odd_names *v = bpf_map_lookup_elem(&names, &k1);
	struct odd_names out = {};

	if (!v)
		return XDP_PASS;
	out.in = v->in + 1;
	out.class = v->class + 2;
	out.__init__ = v->__init__ + 3;
	out.__slots__ = v->__slots__ + 4;
	out._asdict = v->_asdict + 5;
	out._fields = v->_fields + 6;
	out.__class__ = v->__class__ + 7;
	out.def = v->def + 8;
	out.in_ = v->in_ + 9;
	bpf_map_update_elem(&names, &k2, &out, BPF_ANY);
	return XDP_PASS;
}

SEC("xdp")
int fill(struct xdp_md *ctx)
{
	__u32 k3 = 3;
	struct odd_names out = {
		.in = 1, .class = 2, .__init__ = 3, .__slots__ = 4, ._asdict = 5,
		._fields = 6, .__class__ = 7, .def = 8, .in_ = 9,
	};

	bpf_map_update_elem(&names, &k3, &out, BPF_ANY);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
