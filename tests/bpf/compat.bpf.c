// SPDX-License-Identifier: GPL-2.0
/* Features of objects built by other toolchains: kconfig and ksym externs,
 * string sections from bpf_printk, several programs in one section family,
 * a custom .data section. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

extern int LINUX_KERNEL_VERSION __kconfig;
extern bool CONFIG_BPF_SYSCALL __kconfig __weak;
extern int CONFIG_PYBPF_TEST_VALUE __kconfig __weak;
extern const void schedule __ksym;

__u64 seen_version;
__u64 seen_bpf_syscall;
__u64 seen_test_value;
__u64 seen_init_task;
__u32 custom_counter SEC(".data.custom") = 7;

SEC("tracepoint/syscalls/sys_enter_getpid")
int prog_a(void *ctx)
{
	seen_version = LINUX_KERNEL_VERSION;
	seen_bpf_syscall = CONFIG_BPF_SYSCALL;
	seen_test_value = CONFIG_PYBPF_TEST_VALUE;
	seen_init_task = (__u64)&schedule;
	bpf_trace_printk("pybpf compat %d\n", sizeof("pybpf compat %d\n"), 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int prog_b(void *ctx)
{
	custom_counter++;
	return 0;
}

SEC("raw_tp/sys_enter")
int prog_c(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
