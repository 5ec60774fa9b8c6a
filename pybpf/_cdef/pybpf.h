/* cffi declarations for pybpf's own C helpers (pybpf/_cdef/pybpf.c). */
extern "Python" void _pybpf_on_log(int level, const char *msg);
void pybpf_log_install(void);
int pybpf_libbpf_load(const char *path, char *err, size_t errlen);
const char *pybpf_libbpf_sym(int i, int *required, int *bound);
void pybpf_log_debug(int on);
void *pybpf_dlsym(const char *name);
int pybpf_perf_event_open(__u32 type, __u64 config, __u64 sample, int freq, int pid, int cpu, int group_fd, __u64 config1, __u64 config2);
int pybpf_perf_event_enable(int fd);
int pybpf_sys_bpf(int cmd, void *attr, unsigned int size);
int pybpf_register_section(const char *sec, int prog_type, int attach_type, __u32 prog_flags);
struct bpf_object *pybpf_object_open(const char *data, size_t len, const char *name, const char *kconfig, const char *pin_root_path, const char *btf_custom_path);
void pybpf_object_free(struct bpf_object *obj, const char *data, int btf_fd);
int pybpf_internal_maps(struct bpf_object *obj, __u32 *vids, int max);
struct bpf_map *pybpf_internal_map(struct bpf_object *obj, int i);
int pybpf_write_initial_value(struct bpf_map *map, size_t offset, const void *data, size_t len);
int pybpf_write_internal(struct bpf_object *obj, int i, size_t offset, const void *data, size_t len);
const void *pybpf_internal_initial_value(struct bpf_object *obj, int i, size_t *size);
/* event readers (pybpf/_native/batch.c, reader.c, ring.c, perf.c) */
#define PYBPF_CLOSED -9
struct pybpf_ring_reader;
struct pybpf_perf_reader;
struct pybpf_batch *pybpf_batch_new(size_t data_cap, size_t rec_cap, int ncpu);
void pybpf_batch_free(struct pybpf_batch *b);
void pybpf_batch_reset(struct pybpf_batch *b);
void pybpf_batch_lend(struct pybpf_batch *b, char *data, size_t cap, int grow);
void pybpf_unmap(void *p, size_t len);
struct pybpf_ring_reader *pybpf_ring_reader_new(int *err);
void pybpf_ring_reader_close(struct pybpf_ring_reader *rr);
void pybpf_ring_reader_free(struct pybpf_ring_reader *rr);
int pybpf_ring_reader_add(struct pybpf_ring_reader *rr, int map_fd);
long pybpf_ring_reader_wait(struct pybpf_ring_reader *rr, int timeout_ms);
int pybpf_ring_reader_hold(struct pybpf_ring_reader *rr);
void pybpf_ring_reader_unhold(struct pybpf_ring_reader *rr);
int pybpf_ring_reader_fileno(struct pybpf_ring_reader *rr);
__u64 pybpf_ring_reader_pending(struct pybpf_ring_reader *rr);
__u64 pybpf_ring_reader_size(struct pybpf_ring_reader *rr, int tag);
long pybpf_ring_reader_drain(struct pybpf_ring_reader *rr, struct pybpf_batch *b, size_t cap, int *failed);
long pybpf_ring_reader_peek(struct pybpf_ring_reader *rr, size_t max_bytes, __u64 *end, __u64 *offset, __u64 *span, __u32 *fixed, struct pybpf_batch *b, int *tag);
int pybpf_ring_reader_release(struct pybpf_ring_reader *rr, int tag, __u64 end);
void *pybpf_ring_reader_map_data(struct pybpf_ring_reader *rr, int tag, long *len);
struct pybpf_perf_reader *pybpf_perf_reader_new(int map_fd, size_t page_cnt, const __u32 *cpus, int ncpus, int *err);
void pybpf_perf_reader_close(struct pybpf_perf_reader *pr);
void pybpf_perf_reader_free(struct pybpf_perf_reader *pr);
int pybpf_perf_reader_buffer_cnt(struct pybpf_perf_reader *pr);
long pybpf_perf_reader_wait(struct pybpf_perf_reader *pr, int timeout_ms);
int pybpf_perf_reader_hold(struct pybpf_perf_reader *pr);
void pybpf_perf_reader_unhold(struct pybpf_perf_reader *pr);
int pybpf_perf_reader_fileno(struct pybpf_perf_reader *pr);
long pybpf_perf_reader_drain(struct pybpf_perf_reader *pr, struct pybpf_batch *b, size_t max_bytes);
int pybpf_urb_write(struct user_ring_buffer *rb, const void *data, __u32 n, int timeout_ms);
int pybpf_urb_reserve(struct user_ring_buffer *rb, __u32 n, int timeout_ms, void **slot);
int pybpf_urb_settle(struct user_ring_buffer *rb, void **slot, int submit, const void *src,
		     __u32 n);
/* BTF type sections (pybpf/_native/btf.c) */
long pybpf_btf_index(const unsigned char *types, size_t len, __u32 first_id, __u32 nstr, __u32 *offs, size_t cap, __u32 *bad);
void pybpf_btf_find(const unsigned char *types, const __u32 *offs, size_t n, __u32 first_id, const char *base_strs, __u32 base_nstr, const char *strs, __u32 nstrs, const char *name, size_t name_len, __u32 *first);
