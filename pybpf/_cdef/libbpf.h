/* cffi declarations mirroring <bpf/libbpf.h> (libbpf 1.1 API). */
enum libbpf_print_level { LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG };

__u32 libbpf_major_version(void);
__u32 libbpf_minor_version(void);
const char *libbpf_version_string(void);
int libbpf_strerror(int err, char *buf, size_t size);
const char *libbpf_bpf_attach_type_str(enum bpf_attach_type t);
const char *libbpf_bpf_link_type_str(enum bpf_link_type t);
const char *libbpf_bpf_map_type_str(enum bpf_map_type t);
const char *libbpf_bpf_prog_type_str(enum bpf_prog_type t);
int libbpf_num_possible_cpus(void);

/* object */
struct bpf_object;
struct bpf_program;
struct bpf_map;
struct bpf_link;
struct btf;

struct bpf_object_open_opts {
    size_t sz;
    const char *object_name;
    bool relaxed_maps;
    const char *pin_root_path;
    const char *kconfig;
    const char *btf_custom_path;
    char *kernel_log_buf;
    size_t kernel_log_size;
    __u32 kernel_log_level;
    ...;
};

struct bpf_object *bpf_object__open_file(const char *path, const struct bpf_object_open_opts *opts);
struct bpf_object *bpf_object__open_mem(const void *obj_buf, size_t obj_buf_sz, const struct bpf_object_open_opts *opts);
int bpf_object__load(struct bpf_object *obj);
void bpf_object__close(struct bpf_object *obj);
int bpf_object__pin_maps(struct bpf_object *obj, const char *path);
int bpf_object__unpin_maps(struct bpf_object *obj, const char *path);
const char *bpf_object__name(const struct bpf_object *obj);
unsigned int bpf_object__kversion(const struct bpf_object *obj);
struct btf *bpf_object__btf(const struct bpf_object *obj);
int bpf_object__btf_fd(const struct bpf_object *obj);
struct bpf_program *bpf_object__find_program_by_name(const struct bpf_object *obj, const char *name);
struct bpf_program *bpf_object__next_program(const struct bpf_object *obj, struct bpf_program *prog);
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_map *bpf_object__next_map(const struct bpf_object *obj, const struct bpf_map *map);
int libbpf_unregister_prog_handler(int handler_id);
int libbpf_prog_type_by_name(const char *name, enum bpf_prog_type *prog_type, enum bpf_attach_type *expected_attach_type);

/* program */
bool bpf_program__autoload(const struct bpf_program *prog);
int bpf_program__set_autoload(struct bpf_program *prog, bool autoload);
bool bpf_program__autoattach(const struct bpf_program *prog);
void bpf_program__set_autoattach(struct bpf_program *prog, bool autoattach);
const struct bpf_insn *bpf_program__insns(const struct bpf_program *prog);
size_t bpf_program__insn_cnt(const struct bpf_program *prog);
int bpf_program__fd(const struct bpf_program *prog);
const char *bpf_program__name(const struct bpf_program *prog);
const char *bpf_program__section_name(const struct bpf_program *prog);
enum bpf_prog_type bpf_program__type(const struct bpf_program *prog);
int bpf_program__set_type(struct bpf_program *prog, enum bpf_prog_type type);
enum bpf_attach_type bpf_program__expected_attach_type(const struct bpf_program *prog);
int bpf_program__set_expected_attach_type(struct bpf_program *prog, enum bpf_attach_type type);
__u32 bpf_program__flags(const struct bpf_program *prog);
int bpf_program__set_flags(struct bpf_program *prog, __u32 flags);
__u32 bpf_program__log_level(const struct bpf_program *prog);
int bpf_program__set_log_level(struct bpf_program *prog, __u32 log_level);
const char *bpf_program__log_buf(const struct bpf_program *prog, size_t *log_size);
int bpf_program__set_log_buf(struct bpf_program *prog, char *log_buf, size_t log_size);
int bpf_program__set_attach_target(struct bpf_program *prog, int attach_prog_fd, const char *attach_func_name);
int bpf_program__pin(struct bpf_program *prog, const char *path);
int bpf_program__unpin(struct bpf_program *prog, const char *path);

/* link */
int bpf_link__fd(const struct bpf_link *link);
const char *bpf_link__pin_path(const struct bpf_link *link);
int bpf_link__pin(struct bpf_link *link, const char *path);
int bpf_link__unpin(struct bpf_link *link);
int bpf_link__update_program(struct bpf_link *link, struct bpf_program *prog);
void bpf_link__disconnect(struct bpf_link *link);
int bpf_link__detach(struct bpf_link *link);
int bpf_link__destroy(struct bpf_link *link);
struct bpf_link *bpf_link__open(const char *path);

/* attach */
struct bpf_perf_event_opts { size_t sz; __u64 bpf_cookie; ...; };
struct bpf_kprobe_opts { size_t sz; __u64 bpf_cookie; size_t offset; bool retprobe; ...; };
struct bpf_ksyscall_opts { size_t sz; __u64 bpf_cookie; bool retprobe; ...; };
struct bpf_uprobe_opts { size_t sz; size_t ref_ctr_offset; __u64 bpf_cookie; bool retprobe; const char *func_name; ...; };
struct bpf_usdt_opts { size_t sz; __u64 usdt_cookie; ...; };
struct bpf_tracepoint_opts { size_t sz; __u64 bpf_cookie; ...; };
struct bpf_trace_opts { size_t sz; __u64 cookie; ...; };
struct bpf_iter_attach_opts { size_t sz; union bpf_iter_link_info *link_info; __u32 link_info_len; ...; };

struct bpf_link *bpf_program__attach(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_perf_event_opts(const struct bpf_program *prog, int pfd, const struct bpf_perf_event_opts *opts);
struct bpf_link *bpf_program__attach_kprobe_opts(const struct bpf_program *prog, const char *func_name, const struct bpf_kprobe_opts *opts);
struct bpf_kprobe_multi_opts { size_t sz; const char **syms; const unsigned long *addrs; const __u64 *cookies; size_t cnt; bool retprobe; ...; };
struct bpf_link *bpf_program__attach_kprobe_multi_opts(const struct bpf_program *prog, const char *pattern, const struct bpf_kprobe_multi_opts *opts);
struct bpf_link *bpf_program__attach_ksyscall(const struct bpf_program *prog, const char *syscall_name, const struct bpf_ksyscall_opts *opts);
struct bpf_link *bpf_program__attach_uprobe_opts(const struct bpf_program *prog, int pid, const char *binary_path, size_t func_offset, const struct bpf_uprobe_opts *opts);
struct bpf_link *bpf_program__attach_usdt(const struct bpf_program *prog, int pid, const char *binary_path, const char *usdt_provider, const char *usdt_name, const struct bpf_usdt_opts *opts);
struct bpf_link *bpf_program__attach_tracepoint_opts(const struct bpf_program *prog, const char *tp_category, const char *tp_name, const struct bpf_tracepoint_opts *opts);
struct bpf_link *bpf_program__attach_raw_tracepoint(const struct bpf_program *prog, const char *tp_name);
struct bpf_link *bpf_program__attach_trace_opts(const struct bpf_program *prog, const struct bpf_trace_opts *opts);
struct bpf_link *bpf_program__attach_lsm(const struct bpf_program *prog);
struct bpf_link *bpf_program__attach_cgroup(const struct bpf_program *prog, int cgroup_fd);
struct bpf_link *bpf_program__attach_netns(const struct bpf_program *prog, int netns_fd);
struct bpf_link *bpf_program__attach_xdp(const struct bpf_program *prog, int ifindex);
struct bpf_link *bpf_program__attach_freplace(const struct bpf_program *prog, int target_fd, const char *attach_func_name);
struct bpf_link *bpf_program__attach_iter(const struct bpf_program *prog, const struct bpf_iter_attach_opts *opts);
struct bpf_link *bpf_map__attach_struct_ops(const struct bpf_map *map);

/* map */
int bpf_map__fd(const struct bpf_map *map);
const char *bpf_map__name(const struct bpf_map *map);
enum bpf_map_type bpf_map__type(const struct bpf_map *map);
int bpf_map__set_type(struct bpf_map *map, enum bpf_map_type type);
__u32 bpf_map__max_entries(const struct bpf_map *map);
int bpf_map__set_max_entries(struct bpf_map *map, __u32 max_entries);
__u32 bpf_map__map_flags(const struct bpf_map *map);
int bpf_map__set_map_flags(struct bpf_map *map, __u32 flags);
__u32 bpf_map__numa_node(const struct bpf_map *map);
__u32 bpf_map__key_size(const struct bpf_map *map);
int bpf_map__set_key_size(struct bpf_map *map, __u32 size);
__u32 bpf_map__value_size(const struct bpf_map *map);
int bpf_map__set_value_size(struct bpf_map *map, __u32 size);
__u32 bpf_map__btf_key_type_id(const struct bpf_map *map);
__u32 bpf_map__btf_value_type_id(const struct bpf_map *map);
__u64 bpf_map__map_extra(const struct bpf_map *map);
int bpf_map__set_map_extra(struct bpf_map *map, __u64 map_extra);
int bpf_map__set_initial_value(struct bpf_map *map, const void *data, size_t size);
const void *bpf_map__initial_value(struct bpf_map *map, size_t *psize);
bool bpf_map__is_internal(const struct bpf_map *map);
int bpf_map__set_pin_path(struct bpf_map *map, const char *path);
const char *bpf_map__pin_path(const struct bpf_map *map);
bool bpf_map__is_pinned(const struct bpf_map *map);
int bpf_map__pin(struct bpf_map *map, const char *path);
int bpf_map__unpin(struct bpf_map *map, const char *path);
int bpf_map__set_inner_map_fd(struct bpf_map *map, int fd);
struct bpf_map *bpf_map__inner_map(struct bpf_map *map);
int bpf_map__reuse_fd(struct bpf_map *map, int fd);
bool bpf_map__autocreate(const struct bpf_map *map);
int bpf_map__set_autocreate(struct bpf_map *map, bool autocreate);

/* tc and xdp */
enum bpf_tc_attach_point { BPF_TC_INGRESS, BPF_TC_EGRESS, BPF_TC_CUSTOM };
enum bpf_tc_flags { BPF_TC_F_REPLACE };
struct bpf_tc_hook { size_t sz; int ifindex; enum bpf_tc_attach_point attach_point; __u32 parent; ...; };
struct bpf_tc_opts { size_t sz; int prog_fd; __u32 flags; __u32 prog_id; __u32 handle; __u32 priority; ...; };
int bpf_tc_hook_create(struct bpf_tc_hook *hook);
int bpf_tc_hook_destroy(struct bpf_tc_hook *hook);
int bpf_tc_attach(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);
int bpf_tc_detach(const struct bpf_tc_hook *hook, const struct bpf_tc_opts *opts);
int bpf_tc_query(const struct bpf_tc_hook *hook, struct bpf_tc_opts *opts);

struct bpf_xdp_attach_opts { size_t sz; int old_prog_fd; ...; };
struct bpf_xdp_query_opts { size_t sz; __u32 prog_id; __u32 drv_prog_id; __u32 hw_prog_id; __u32 skb_prog_id; __u8 attach_mode; ...; };
int bpf_xdp_attach(int ifindex, int prog_fd, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_detach(int ifindex, __u32 flags, const struct bpf_xdp_attach_opts *opts);
int bpf_xdp_query(int ifindex, int flags, struct bpf_xdp_query_opts *opts);

/* ring buffer, user ring buffer, perf buffer */
struct ring_buffer;
struct user_ring_buffer;
struct perf_buffer;
typedef int (*ring_buffer_sample_fn)(void *ctx, void *data, size_t size);
struct ring_buffer_opts { size_t sz; ...; };
struct ring_buffer *ring_buffer__new(int map_fd, ring_buffer_sample_fn sample_cb, void *ctx, const struct ring_buffer_opts *opts);
void ring_buffer__free(struct ring_buffer *rb);
int ring_buffer__add(struct ring_buffer *rb, int map_fd, ring_buffer_sample_fn sample_cb, void *ctx);
int ring_buffer__poll(struct ring_buffer *rb, int timeout_ms);
int ring_buffer__consume(struct ring_buffer *rb);
int ring_buffer__epoll_fd(const struct ring_buffer *rb);

struct user_ring_buffer_opts { size_t sz; ...; };
struct user_ring_buffer *user_ring_buffer__new(int map_fd, const struct user_ring_buffer_opts *opts);
void *user_ring_buffer__reserve(struct user_ring_buffer *rb, __u32 size);
void *user_ring_buffer__reserve_blocking(struct user_ring_buffer *rb, __u32 size, int timeout_ms);
void user_ring_buffer__submit(struct user_ring_buffer *rb, void *sample);
void user_ring_buffer__discard(struct user_ring_buffer *rb, void *sample);
void user_ring_buffer__free(struct user_ring_buffer *rb);

typedef void (*perf_buffer_sample_fn)(void *ctx, int cpu, void *data, __u32 size);
typedef void (*perf_buffer_lost_fn)(void *ctx, int cpu, __u64 cnt);
struct perf_buffer_opts { size_t sz; ...; };
struct perf_buffer *perf_buffer__new(int map_fd, size_t page_cnt, perf_buffer_sample_fn sample_cb, perf_buffer_lost_fn lost_cb, void *ctx, const struct perf_buffer_opts *opts);
void perf_buffer__free(struct perf_buffer *pb);
int perf_buffer__epoll_fd(const struct perf_buffer *pb);
int perf_buffer__poll(struct perf_buffer *pb, int timeout_ms);
int perf_buffer__consume(struct perf_buffer *pb);
int perf_buffer__consume_buffer(struct perf_buffer *pb, size_t buf_idx);
size_t perf_buffer__buffer_cnt(const struct perf_buffer *pb);
int perf_buffer__buffer_fd(const struct perf_buffer *pb, size_t buf_idx);

/* feature probes */
int libbpf_probe_bpf_prog_type(enum bpf_prog_type prog_type, const void *opts);
int libbpf_probe_bpf_map_type(enum bpf_map_type map_type, const void *opts);
int libbpf_probe_bpf_helper(enum bpf_prog_type prog_type, int helper_id, const void *opts);
