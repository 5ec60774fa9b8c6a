// SPDX-License-Identifier: GPL-2.0
/* BPF LSM: deny open(2) of one file (inode target_ino on device target_dev,
 * the kernel's dev_t encoding), set before load. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "attach_common.h"

#define EPERM 1

enum { LSM_DENIED = 1 };

const volatile __u64 target_ino = 0;
const volatile __u32 target_dev = 0;

SEC("lsm/file_open")
int BPF_PROG(deny_open, struct file *file, int ret)
{
	struct inode *inode = file->f_inode;

	if (ret)
		return ret;
	if (inode->i_ino != target_ino || inode->i_sb->s_dev != target_dev)
		return 0;
	hit(LSM_DENIED, current_pid());
	return -EPERM;
}

char LICENSE[] SEC("license") = "GPL";
