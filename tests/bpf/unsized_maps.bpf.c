/* Maps whose sizes the object leaves for the loader (as libbpf-tools stack maps do). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(key_size, 0); __uint(value_size, 8); __uint(max_entries, 4); } nokey SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(key_size, 4); __uint(value_size, 0); __uint(max_entries, 4); } noval SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __type(key, u32); __type(value, u64); } noent SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid") int p(void *ctx) { u32 k = 0; bpf_map_lookup_elem(&nokey, &k); bpf_map_lookup_elem(&noval, &k); bpf_map_lookup_elem(&noent, &k); return 0; }
char LICENSE[] SEC("license") = "GPL";
