/* cffi declarations: the kernel uapi types libbpf's headers use (linux/bpf.h). */
typedef uint8_t __u8;
typedef uint16_t __u16;
typedef uint32_t __u32;
typedef unsigned long long __u64;
typedef int32_t __s32;
typedef long long __s64;

enum bpf_prog_type { BPF_PROG_TYPE_UNSPEC, BPF_PROG_TYPE_TRACING, BPF_PROG_TYPE_KPROBE, ... };
enum bpf_map_type { BPF_MAP_TYPE_UNSPEC, ... };
enum bpf_attach_type { BPF_CGROUP_INET_INGRESS, BPF_TRACE_FENTRY, BPF_XDP, ... };
enum bpf_link_type { BPF_LINK_TYPE_UNSPEC, ... };
enum bpf_stats_type { BPF_STATS_RUN_TIME, ... };

struct bpf_insn { __u8 code; __s32 imm; ...; };

struct bpf_prog_info {
    __u32 type;
    __u32 id;
    __u8 tag[8];
    __u32 jited_prog_len;
    __u32 xlated_prog_len;
    __u64 jited_prog_insns;
    __u64 xlated_prog_insns;
    __u64 load_time;
    __u32 created_by_uid;
    __u32 nr_map_ids;
    __u64 map_ids;
    char name[16];
    __u32 ifindex;
    __u32 btf_id;
    __u32 nr_line_info;
    __u64 line_info;
    __u32 line_info_rec_size;
    __u64 run_time_ns;
    __u64 run_cnt;
    __u64 recursion_misses;
    __u32 verified_insns;
    __u32 attach_btf_obj_id;
    __u32 attach_btf_id;
    ...;
};

struct bpf_map_info {
    __u32 type;
    __u32 id;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
    char name[16];
    __u32 ifindex;
    __u32 btf_vmlinux_value_type_id;
    __u32 btf_id;
    __u32 btf_key_type_id;
    __u32 btf_value_type_id;
    __u64 map_extra;
    ...;
};

struct bpf_link_info {
    __u32 type;
    __u32 id;
    __u32 prog_id;
    ...;
};

struct bpf_btf_info {
    __u64 btf;
    __u32 btf_size;
    __u32 id;
    __u64 name;
    __u32 name_len;
    __u32 kernel_btf;
    ...;
};

union bpf_iter_link_info {
    struct { __u32 map_fd; } map;
    ...;
};

struct perf_event_header { __u32 type; __u16 misc; __u16 size; };
struct perf_event_attr { __u32 type; __u32 size; __u64 config; ...; };
