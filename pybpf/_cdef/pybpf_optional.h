/* Option structs of libbpf APIs newer than 1.1, under pybpf_ names (the 1.1
 * headers this may be compiled against lack them). Each copies libbpf's layout
 * of the version named; libbpf reads .sz and ignores (or refuses, when nonzero)
 * what lies past the fields it knows. Both a cffi declaration and C (pybpf.c
 * includes it). The functions themselves are resolved with dlsym at run time:
 * pybpf/_ffi.py's OPTIONAL table. */
struct pybpf_tcx_opts {         /* struct bpf_tcx_opts, libbpf 1.3 */
    size_t sz;
    __u32 flags;
    __u32 relative_fd;
    __u32 relative_id;
    __u64 expected_revision;
};
struct pybpf_netkit_opts {      /* struct bpf_netkit_opts, libbpf 1.3 */
    size_t sz;
    __u32 flags;
    __u32 relative_fd;
    __u32 relative_id;
    __u64 expected_revision;
};
struct pybpf_uprobe_multi_opts { /* struct bpf_uprobe_multi_opts, libbpf 1.3 (session: 1.5) */
    size_t sz;
    const char **syms;
    const unsigned long *offsets;
    const unsigned long *ref_ctr_offsets;
    const __u64 *cookies;
    size_t cnt;
    bool retprobe;
    bool session;
};
struct pybpf_netfilter_opts {   /* struct bpf_netfilter_opts, libbpf 1.3 */
    size_t sz;
    __u32 pf;
    __u32 hooknum;
    __s32 priority;
    __u32 flags;
};
struct pybpf_token_create_opts { /* struct bpf_token_create_opts, libbpf 1.4 */
    size_t sz;
    __u32 flags;
};
struct pybpf_cgroup_opts {      /* struct bpf_cgroup_opts, libbpf 1.6 */
    size_t sz;
    __u32 flags;
    __u32 relative_fd;
    __u32 relative_id;
    __u64 expected_revision;
};
