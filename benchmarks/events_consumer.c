// SPDX-License-Identifier: GPL-2.0
/* C libbpf baseline for bench_events.py: consume benchmarks/events_bench.bpf.o
 * the way a C tool would (ring_buffer__poll / perf_buffer__poll with a
 * per-event callback that checks the sequence number), and print one line:
 *   events=N seconds=S gaps=G drops=D lost=L
 * Build: cc -O2 -o events_consumer events_consumer.c -lbpf -lpthread
 * (bench_events.py also builds it with -shared -fPIC for bench_trigger()).
 * Usage: events_consumer OBJ MODE RING_BYTES PERF_PAGES N TRIGGERS
 *   MODE: ring-stream | ring-drain | perf-stream | perf-drain, optionally with a
 *         "-copy" suffix (ring-drain-copy): the callback first copies each record
 *         into one big buffer and checks the copy -- what a consumer that keeps
 *         the records (like pybpf's batches) has to do
 *   stream: a thread (CPU 0) calls getppid() TRIGGERS times, N events each,
 *           while the main thread (CPU 1) consumes;
 *   drain:  N*TRIGGERS events are produced first, then consumed and timed. */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct bench_event { __u64 seq, a, b, c; };
struct bench_cfg { __u32 count, mode, pid, pad; };

static __u64 expected, received, gaps, lost;
static char *copy_buf;		/* "-copy" modes: records are appended here */
static size_t copy_len, copy_cap;
static unsigned long triggers;
static volatile int trigger_done;

static int silent(enum libbpf_print_level l, const char *f, va_list a) { return 0; }

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

static inline void check(const struct bench_event *e)
{
	if (e->seq != expected)
		gaps += e->seq > expected ? e->seq - expected : 1;
	expected = e->seq + 1;
	received++;
}

static inline void keep(const void *data, size_t size)
{
	if (copy_len + size > copy_cap) {
		received++;	/* cannot happen: the buffer holds a whole drain */
		gaps++;
		return;
	}
	memcpy(copy_buf + copy_len, data, size);
	check((const void *)(copy_buf + copy_len));
	copy_len += size;
}

static int on_ring(void *ctx, void *data, size_t size)
{
	if (copy_buf)
		keep(data, size);
	else
		check(data);
	return 0;
}

static void on_perf(void *ctx, int cpu, void *data, __u32 size)
{
	if (copy_buf)
		keep(data, size);
	else
		check(data);
}

static void on_lost(void *ctx, int cpu, __u64 cnt)
{
	lost += cnt;
}

static void *trigger(void *arg)
{
	pin(0);
	for (unsigned long i = 0; i < triggers; i++)
		syscall(SYS_getppid);
	trigger_done = 1;
	return NULL;
}

/* For bench_events.py, which loads this file as a shared library too: the same
 * trigger loop, called through ctypes so the Python thread running it holds
 * no GIL while it triggers. */
void bench_trigger(unsigned long n)
{
	triggers = n;
	trigger(NULL);
}

static __u64 drops(struct bpf_object *obj)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, "pybpf_ringbuf_drops");
	int n = libbpf_num_possible_cpus();
	__u64 vals[n], total = 0;
	__u32 zero = 0;

	if (!m || bpf_map_lookup_elem(bpf_map__fd(m), &zero, vals))
		return 0;
	for (int i = 0; i < n; i++)
		total += vals[i];
	return total;
}

int main(int argc, char **argv)
{
	if (argc != 7) {
		fprintf(stderr, "usage: %s OBJ MODE RING_BYTES PERF_PAGES N TRIGGERS\n", argv[0]);
		return 2;
	}
	const char *mode = argv[2];
	int perf = strncmp(mode, "perf", 4) == 0;
	int drain = strstr(mode, "drain") != NULL;
	__u32 count = atoi(argv[5]);
	struct bench_cfg cfg = { .count = count, .mode = perf, .pid = getpid() };
	struct ring_buffer *rb = NULL;
	struct perf_buffer *pb = NULL;
	struct bpf_object *obj;
	__u64 total;
	__u32 zero = 0;
	double t0, t1;
	pthread_t th;

	triggers = strtoul(argv[6], NULL, 10);
	total = (__u64)count * triggers;
	libbpf_set_print(silent);
	obj = bpf_object__open_file(argv[1], NULL);
	if (!obj)
		return 1;
	bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "rb"), atoi(argv[3]));
	if (bpf_object__load(obj) || !bpf_program__attach(
			bpf_object__find_program_by_name(obj, "bench_emit"))) {
		fprintf(stderr, "load/attach failed\n");
		return 1;
	}
	bpf_map_update_elem(bpf_object__find_map_fd_by_name(obj, "cfg"), &zero, &cfg, 0);
	if (perf)
		pb = perf_buffer__new(bpf_object__find_map_fd_by_name(obj, "pb"), atoi(argv[4]),
				      on_perf, on_lost, NULL, NULL);
	else
		rb = ring_buffer__new(bpf_object__find_map_fd_by_name(obj, "rb"), on_ring, NULL,
				      NULL);
	if (!pb && !rb) {
		fprintf(stderr, "buffer setup failed\n");
		return 1;
	}
	pin(1);
	if (strstr(mode, "-copy")) {
		copy_cap = perf ? (size_t)atoi(argv[4]) * 4096 * libbpf_num_possible_cpus()
				: (size_t)atoi(argv[3]);
		copy_buf = malloc(copy_cap);
		if (!copy_buf)
			return 1;
		memset(copy_buf, 0xff, copy_cap); /* fault in before timing (not 0: calloc) */
	}
	if (drain) {
		trigger(NULL);
		pin(1);
		t0 = now();
		if (perf)
			perf_buffer__consume(pb);
		else
			ring_buffer__consume(rb);
		t1 = now();
	} else {
		t0 = now();
		pthread_create(&th, NULL, trigger, NULL);
		while (received + lost + gaps < total) {
			if (perf)
				perf_buffer__poll(pb, 100);
			else
				ring_buffer__poll(rb, 100);
			if (trigger_done && received + lost + gaps < total) {
				/* the rest may be drops: take what is there and stop */
				if (perf)
					perf_buffer__consume(pb);
				else
					ring_buffer__consume(rb);
				if (received + lost + drops(obj) >= total)
					break;
			}
		}
		t1 = now();
		pthread_join(th, NULL);
	}
	printf("events=%llu seconds=%.6f gaps=%llu drops=%llu lost=%llu total=%llu\n",
	       (unsigned long long)received, t1 - t0, (unsigned long long)gaps,
	       (unsigned long long)drops(obj), (unsigned long long)lost,
	       (unsigned long long)total);
	ring_buffer__free(rb);
	perf_buffer__free(pb);
	bpf_object__close(obj);
	return 0;
}
