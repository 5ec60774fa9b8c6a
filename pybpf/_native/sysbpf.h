/* SPDX-License-Identifier: Apache-2.0 */
/* The one bpf(2) primitive of pybpf's native code.  The map fast path
 * (pybpf/_fastpath.c) and the cffi glue's pybpf_sys_bpf (pybpf/_cdef/pybpf.c, for
 * commands whose fields libbpf 1.1 does not pass on) both call it; everything else
 * goes through libbpf's own wrappers.  Inline: the fast path pays the syscall and
 * nothing more.  Returns the syscall's result, or -errno. */
#ifndef PYBPF_SYSBPF_H
#define PYBPF_SYSBPF_H

#include <errno.h>
#include <sys/syscall.h>
#include <unistd.h>

static inline long pybpf_bpf(int cmd, void *attr, unsigned int size)
{
	long ret = syscall(__NR_bpf, cmd, attr, size);

	return ret < 0 ? -errno : ret;
}

#endif
