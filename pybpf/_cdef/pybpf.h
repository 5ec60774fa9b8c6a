/* cffi declarations for pybpf's own C helpers (pybpf/_cdef/pybpf.c). */
extern "Python" void _pybpf_on_log(int level, const char *msg);
void pybpf_log_install(void);
int pybpf_symbol_present(const char *name);
int pybpf_perf_event_open(__u32 type, __u64 config, __u64 sample, int freq, int pid, int cpu, int group_fd, __u64 config1, __u64 config2);
int pybpf_perf_event_enable(int fd);
extern "Python" int _pybpf_ringbuf_sample(void *ctx, void *data, size_t size);
