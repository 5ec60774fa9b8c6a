// SPDX-License-Identifier: Apache-2.0
/* The C side of benchmarks/bench_maps.py: the same operations on the same map
 * (opened by id) with plain libbpf calls.
 *   map_ops lookup ID N NKEYS   -> ns per bpf_map_lookup_elem
 *   map_ops update ID N NKEYS   -> ns per bpf_map_update_elem
 *   map_ops delete ID FIRST N   -> ns per bpf_map_delete_elem of keys FIRST..FIRST+N-1
 *   map_ops dump ID CHUNK       -> entries and ns for a full bpf_map_lookup_batch walk
 * Built as a shared object too (gcc -shared -fPIC), so that bench_maps.py can run the
 * single-element loops in its own process, interleaved with the Python side in short
 * rounds: both then see the same host load. */
#include <bpf/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ns per operation, or -1 on a failed call */
double map_ops_lookup(int fd, long n, long nkeys)
{
	char value[4096] = {};
	long long t0 = now_ns();

	for (long i = 0; i < n; i++) {
		__u32 key = i % nkeys;

		if (bpf_map_lookup_elem(fd, &key, value))
			return -1;
	}
	return (double)(now_ns() - t0) / n;
}

double map_ops_update(int fd, long n, long nkeys)
{
	char value[4096] = {};
	long long t0 = now_ns();

	for (long i = 0; i < n; i++) {
		__u32 key = i % nkeys;

		((__u64 *)value)[0] = i;
		if (bpf_map_update_elem(fd, &key, value, 0))
			return -1;
	}
	return (double)(now_ns() - t0) / n;
}

double map_ops_delete(int fd, __u32 first, long n)
{
	long long t0 = now_ns();

	for (long i = 0; i < n; i++) {
		__u32 key = first + i;

		if (bpf_map_delete_elem(fd, &key))
			return -1;
	}
	return (double)(now_ns() - t0) / n;
}

static int print_ns(double ns)
{
	if (ns < 0)
		return 1;
	printf("%.1f\n", ns);
	return 0;
}

int main(int argc, char **argv)
{
	int fd;
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);

	if (argc < 4)
		return 2;
	fd = bpf_map_get_fd_by_id(atoi(argv[2]));
	if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &len)) {
		perror("map");
		return 1;
	}
	if (!strcmp(argv[1], "lookup") && argc > 4)
		return print_ns(map_ops_lookup(fd, atol(argv[3]), atol(argv[4])));
	if (!strcmp(argv[1], "update") && argc > 4)
		return print_ns(map_ops_update(fd, atol(argv[3]), atol(argv[4])));
	if (!strcmp(argv[1], "delete") && argc > 4)
		return print_ns(map_ops_delete(fd, atol(argv[3]), atol(argv[4])));
	if (!strcmp(argv[1], "dump")) {
		__u32 chunk = atoi(argv[3]), count, total = 0, token = 0;
		char *keys = malloc((size_t)chunk * info.key_size);
		char *vals = malloc((size_t)chunk * info.value_size);
		__u64 sum = 0;
		void *in = NULL;
		long long t0 = now_ns();
		DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, opts);

		for (;;) {
			int err;

			count = chunk;
			err = bpf_map_lookup_batch(fd, in, &token, keys, vals, &count, &opts);
			if (err && errno != ENOENT)
				return 1;
			total += count;
			for (__u32 i = 0; i < count; i++) /* the check sum (Python sums its kept chunks after its timed walk) */
				sum += *(__u64 *)(vals + (size_t)i * info.value_size);
			if (err)
				break;
			in = &token;
		}
		printf("%u %.0f %llu\n", total, (double)(now_ns() - t0), (unsigned long long)sum);
		return 0;
	}
	return 2;
}
