// SPDX-License-Identifier: GPL-2.0
/* C baseline for bench_open.py, N times each; prints the median microseconds:
 *   open_mem OBJECT N            bpf_object__open_mem + close
 *   open_mem OBJECT N VAR        the same plus setting the 4-byte .rodata variable VAR
 *                                to 1 (its offset looked up in the object's BTF, as a
 *                                loader without a generated skeleton does)
 *   open_mem --btf FILE N NAME   btf__parse of a raw BTF file (e.g. the kernel's) and
 *                                btf__find_by_name_kind of struct NAME + its size
 * Build: cc -O2 -o build/open_mem benchmarks/open_mem.c -lbpf */
#include <bpf/libbpf.h>
#include <bpf/btf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int silent(enum libbpf_print_level l, const char *f, va_list a) { return 0; }

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double now_us(void)
{
	struct timespec a;

	clock_gettime(CLOCK_MONOTONIC, &a);
	return a.tv_sec * 1e6 + a.tv_nsec / 1e3;
}

static int set_rodata(struct bpf_object *obj, const char *var)
{
	struct bpf_map *m;
	struct btf *btf = bpf_object__btf(obj);

	if (!btf)
		return -1;
	bpf_object__for_each_map(m, obj) {
		const char *name = bpf_map__name(m);
		const char *sec = strstr(name, ".rodata");
		size_t size;
		char *data;
		int id;

		if (!sec || strcmp(sec, ".rodata"))
			continue;
		id = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
		data = (char *)bpf_map__initial_value(m, &size);
		if (id < 0 || !data)
			return -1;
		const struct btf_type *t = btf__type_by_id(btf, id);
		const struct btf_var_secinfo *v = btf_var_secinfos(t);
		for (int i = 0; i < btf_vlen(t); i++, v++) {
			const struct btf_type *vt = btf__type_by_id(btf, v->type);
			if (!strcmp(btf__name_by_offset(btf, vt->name_off), var)) {
				*(int *)(data + v->offset) = 1;
				return 0;
			}
		}
	}
	return -1;
}

static int bench_btf(const char *path, int n, const char *name, double *t)
{
	for (int i = 0; i < n; i++) {
		double a = now_us();
		struct btf *btf = btf__parse(path, NULL);
		if (!btf)
			return 1;
		int id = btf__find_by_name_kind(btf, name, BTF_KIND_STRUCT);
		if (id < 0 || btf__resolve_size(btf, id) <= 0)
			return 1;
		t[i] = now_us() - a;
		btf__free(btf);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "--btf")) {
		int n = atoi(argv[3]);
		double *t = calloc(n > 0 ? n : 1, sizeof(*t));
		libbpf_set_print(silent);
		if (n <= 0 || bench_btf(argv[2], n, argv[4], t))
			return 1;
		qsort(t, n, sizeof(*t), cmp);
		printf("%.1f\n", t[n / 2]);
		return 0;
	}
	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: %s OBJECT N [VAR] | --btf FILE N STRUCT\n", argv[0]);
		return 2;
	}
	const char *var = argc == 4 ? argv[3] : NULL;
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
		double a = now_us();
		struct bpf_object *obj = bpf_object__open_mem(buf, size, NULL);
		if (!obj)
			return 1;
		if (var && set_rodata(obj, var))
			return 1;
		bpf_object__close(obj);
		t[i] = now_us() - a;
	}
	qsort(t, n, sizeof(*t), cmp);
	printf("%.1f\n", t[n / 2]);
	return 0;
}
