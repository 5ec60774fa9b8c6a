/* cffi declarations of libbpf functions newer than MIN_LIBBPF (1.1), one prototype a
 * line, taking pybpf's copies of their option structs (pybpf_optional.h). Each is a
 * pointer that stays NULL when the runtime libbpf lacks it: call them only through
 * pybpf._ffi.optional(NAME), which says None then. The version that added each is
 * in pybpf/_ffi.py's OPTIONAL table; backend/pybpf_backend.py makes the C pointer
 * declarations from these lines. */
struct bpf_link *bpf_program__attach_tcx(const struct bpf_program *prog, int ifindex, const struct pybpf_tcx_opts *opts);
struct bpf_link *bpf_program__attach_netkit(const struct bpf_program *prog, int ifindex, const struct pybpf_netkit_opts *opts);
struct bpf_link *bpf_program__attach_uprobe_multi(const struct bpf_program *prog, int pid, const char *binary_path, const char *func_pattern, const struct pybpf_uprobe_multi_opts *opts);
struct bpf_link *bpf_program__attach_netfilter(const struct bpf_program *prog, const struct pybpf_netfilter_opts *opts);
int bpf_token_create(int bpffs_fd, struct pybpf_token_create_opts *opts);
int ring__consume_n(void *r, size_t n);
struct bpf_link *bpf_program__attach_sockmap(const struct bpf_program *prog, int map_fd);
int bpf_map__set_autoattach(struct bpf_map *map, bool autoattach);
int bpf_object__prepare(struct bpf_object *obj);
struct bpf_link *bpf_program__attach_cgroup_opts(const struct bpf_program *prog, int cgroup_fd, const struct pybpf_cgroup_opts *opts);
