// SPDX-License-Identifier: GPL-2.0
/* Test object for tests/test_resources.py and tests/test_overload.py:
 * - count_getpid: a raw tracepoint program (cheap to attach and detach, for
 *   open/load/attach/close cycles);
 * - produce: a `syscall` program run with test_run() that writes 1000 records
 *   into a 16 KiB ring buffer in one go, counting failed reservations with
 *   pybpf_count_drop() (bpf_src/pybpf_common.h) -- a producer that outruns
 *   any consumer. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "pybpf_common.h"

#define BURST 1000

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} events SEC(".maps");

struct record {
	__u64 seq;
	__u8 payload[56];
};

__u64 produced;
__u64 getpid_calls;

static long emit_one(__u32 i, void *ctx)
{
	__u64 seq = __sync_fetch_and_add(&produced, 1);
	struct record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);

	if (!r) {
		pybpf_count_drop();
		return 0;
	}
	r->seq = seq;
	__builtin_memset(r->payload, 0xab, sizeof(r->payload));
	bpf_ringbuf_submit(r, 0);
	return 0;
}

SEC("syscall")
int produce(void *ctx)
{
	bpf_loop(BURST, emit_one, NULL, 0);
	return 0;
}

SEC("raw_tp/sys_enter")
int count_syscalls(void *ctx)
{
	__sync_fetch_and_add(&getpid_calls, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
