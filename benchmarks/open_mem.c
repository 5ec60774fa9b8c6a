// SPDX-License-Identifier: GPL-2.0
/* C baseline for bench_open.py: bpf_object__open_mem + close of one file, N
 * times; prints the median microseconds per open. Build:
 *   cc -O2 -o build/open_mem benchmarks/open_mem.c -lbpf */
#include <bpf/libbpf.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int silent(enum libbpf_print_level l, const char *f, va_list a) { return 0; }

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s OBJECT N\n", argv[0]);
		return 2;
	}
	int n = atoi(argv[2]);
	FILE *f = fopen(argv[1], "rb");
	if (!f || n <= 0)
		return 2;
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *buf = malloc(size);
	if (fread(buf, 1, size, f) != (size_t)size)
		return 2;
	fclose(f);
	libbpf_set_print(silent);
	double *t = calloc(n, sizeof(*t));
	for (int i = 0; i < n; i++) {
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		struct bpf_object *obj = bpf_object__open_mem(buf, size, NULL);
		clock_gettime(CLOCK_MONOTONIC, &b);
		if (!obj)
			return 1;
		bpf_object__close(obj);
		t[i] = (b.tv_sec - a.tv_sec) * 1e6 + (b.tv_nsec - a.tv_nsec) / 1e3;
	}
	qsort(t, n, sizeof(*t), cmp);
	printf("%.1f\n", t[n / 2]);
	return 0;
}
