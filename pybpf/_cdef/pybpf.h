/* cffi declarations for pybpf's own C helpers (pybpf/_cdef/pybpf.c). */
extern "Python" void _pybpf_on_log(int level, const char *msg);
void pybpf_log_install(void);
void *pybpf_dlsym(const char *name);
int pybpf_symbol_present(const char *name);
int pybpf_perf_event_open(__u32 type, __u64 config, __u64 sample, int freq, int pid, int cpu, int group_fd, __u64 config1, __u64 config2);
int pybpf_perf_event_enable(int fd);
int pybpf_sys_bpf(int cmd, void *attr, unsigned int size);
/* event streams (pybpf.ringbuf, pybpf.perfbuf) */
struct pybpf_ring;
struct pybpf_batch *pybpf_batch_new(size_t data_cap, size_t rec_cap, int ncpu);
void pybpf_batch_free(struct pybpf_batch *b);
void pybpf_batch_reset(struct pybpf_batch *b);
void pybpf_batch_lend(struct pybpf_batch *b, char *data, size_t cap, int grow);
struct pybpf_ring *pybpf_ring_open(int map_fd, int *err);
void pybpf_ring_close(struct pybpf_ring *r);
__u64 pybpf_ring_avail(const struct pybpf_ring *r);
__u64 pybpf_ring_size(const struct pybpf_ring *r);
long pybpf_ring_peek(struct pybpf_ring *r, size_t max_bytes, __u64 *start, __u64 *end, __u32 *fixed, struct pybpf_batch *b, __u32 tag, int mixed);
void pybpf_ring_release(struct pybpf_ring *r, __u64 end);
__u64 pybpf_ring_mask(const struct pybpf_ring *r);
long pybpf_ring_drain(struct pybpf_ring *r, struct pybpf_batch *b, __u32 tag, size_t max_bytes, size_t max_records);
struct perf_buffer *pybpf_perf_buffer_new(int map_fd, size_t page_cnt, struct pybpf_batch *b);
long pybpf_perf_drain(struct perf_buffer *pb, int idx, struct pybpf_batch *b, __u32 cpu, size_t max_bytes);
