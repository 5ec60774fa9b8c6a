// SPDX-License-Identifier: GPL-2.0
/* Global variables in every kind of data section; `step` reads what Python
 * wrote and writes what Python reads. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct gcfg {
	__u16 port;
	char name[8];
};

struct gpoint {
	__s32 x, y;
};

const volatile __u32 ro_val = 7;
const volatile struct gcfg ro_cfg = { .port = 80, .name = "web" };
const volatile __u32 custom_ro SEC(".rodata.custom") = 5;
__u64 bss_in;
__u64 bss_out;
char bss_name_out[8];
__u32 data_arr[4] = { 1, 2, 3, 4 };
struct gpoint data_pt = { -1, 2 };
__u64 custom_var SEC(".data.custom") = 99;

SEC("syscall")
int step(void *ctx)
{
	bss_out = bss_in * 2 + ro_val + ro_cfg.port + custom_ro;
	for (int i = 0; i < 8; i++) /* volatile reads: not folded by clang */
		bss_name_out[i] = ro_cfg.name[i];
	data_arr[3] = data_pt.x + data_pt.y;
	custom_var++;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
