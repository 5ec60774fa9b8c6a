// SPDX-License-Identifier: GPL-2.0
/* More global-variable sections (20 .rodata.N, plus .rodata and .bss) than
 * a small fixed array holds (Object reads the internal maps' DATASEC ids with
 * room for all of them): set_rodata and obj.sections past 16 sections.  `sum` adds every .rodata.N value into .bss. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#define RO(n) const volatile __u32 ro##n SEC(".rodata." #n) = n;
RO(0) RO(1) RO(2) RO(3) RO(4) RO(5) RO(6) RO(7) RO(8) RO(9)
RO(10) RO(11) RO(12) RO(13) RO(14) RO(15) RO(16) RO(17) RO(18) RO(19)
const volatile __u32 base = 1000;
__u64 total;

SEC("syscall")
int sum(void *ctx)
{
	total = base + ro0 + ro1 + ro2 + ro3 + ro4 + ro5 + ro6 + ro7 + ro8 + ro9 + ro10
		+ ro11 + ro12 + ro13 + ro14 + ro15 + ro16 + ro17 + ro18 + ro19;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
