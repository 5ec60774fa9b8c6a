// SPDX-License-Identifier: GPL-2.0
/* Inode local storage: only LSM programs can reach it from the kernel side
 * (bpf_inode_storage_get); user space keys it by an open file's fd. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct ino_val {
	__u64 opens;
	__u32 tag;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_INODE_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ino_val);
} inost SEC(".maps");

__u32 seen_tag;

/* Opens of a file that Python gave storage to are counted (others have none). */
SEC("lsm/file_open")
int BPF_PROG(count_open, struct file *file)
{
	struct ino_val *v;

	v = bpf_inode_storage_get(&inost, file->f_inode, 0, 0);
	if (!v)
		return 0;
	__sync_fetch_and_add(&v->opens, 1);
	seen_tag = v->tag;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
