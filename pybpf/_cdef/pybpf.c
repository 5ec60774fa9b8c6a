/* pybpf's binding glue, compiled into the cffi extension (pybpf._libbpf).
 *
 * Only what Python cannot do well through cffi -- loading libbpf (below),
 * formatting libbpf's va_list log callback, perf_event_open(2), which has
 * no libc wrapper, and bpf(2) with a caller-built attr.  The event readers'
 * native code lives in pybpf/_native/ (batch.c, reader.c, ring.c, perf.c),
 * compiled into the same extension after this file (build.py).
 */
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/perf_event.h>

#include "sysbpf.h"	/* pybpf/_native: the one bpf(2) primitive */

static void _pybpf_on_log(int level, const char *msg);

/* 0 while no one listens to libbpf's debug lines (pybpf/_ffi.py's capture() sets it
 * from the logger's level): they are then dropped here, unformatted, instead of
 * costing a call into Python each (an object's open prints ~100 of them). */
static volatile int pybpf_debug_on = 1;

void pybpf_log_debug(int on)
{
	pybpf_debug_on = on;
}

/* libbpf hands its print callback a format and a va_list; cffi cannot pass a
 * va_list to Python, so format here and hand Python a finished string. */
static int pybpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char small[512];
	va_list copy;
	int n;
	int saved = errno;

	if (level == LIBBPF_DEBUG && !pybpf_debug_on)
		return 0;
	va_copy(copy, ap);
	n = vsnprintf(small, sizeof(small), fmt, copy);
	va_end(copy);
	if (n < 0) {
		errno = saved;
		return 0;
	}
	if ((size_t)n < sizeof(small)) {
		_pybpf_on_log((int)level, small);
	} else {
		char *big = malloc((size_t)n + 1);
		if (big) {
			vsnprintf(big, (size_t)n + 1, fmt, ap);
			_pybpf_on_log((int)level, big);
			free(big);
		} else {
			_pybpf_on_log((int)level, small);
		}
	}
	/* libbpf reads errno after printing in a few paths: leave it intact. */
	errno = saved;
	return n;
}

void pybpf_log_install(void)
{
	libbpf_set_print(pybpf_print);
}

/* --- libbpf, loaded at import (pybpf/_ffi.py) --------------------------------
 *
 * The extension does not link libbpf: every libbpf function it calls is a pointer
 * of pybpf_libbpf_syms (generated before this file by backend/pybpf_backend.py).
 * pybpf_libbpf_load() dlopen()s the system libbpf and fills them all with dlsym
 * (the default version of each symbol, as a program linked against that libbpf
 * gets); required ones missing are counted, optional ones (newer than libbpf 1.1)
 * stay NULL. Nothing calls libbpf before it returned 0 (pybpf refuses to import
 * otherwise). */
static void *pybpf_libbpf;

/* Load libbpf from PATH and bind the table. Returns the number of required
 * functions missing (0: usable), or -1 when dlopen failed (ERR gets dlerror()). */
int pybpf_libbpf_load(const char *path, char *err, size_t errlen)
{
	size_t i;
	int missing = 0;
	void *handle;

	if (pybpf_libbpf)
		return 0;
	handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!handle) {
		const char *why = dlerror();

		snprintf(err, errlen, "%s", why ? why : "dlopen failed");
		return -1;
	}
	for (i = 0; i < sizeof(pybpf_libbpf_syms) / sizeof(pybpf_libbpf_syms[0]); i++) {
		*pybpf_libbpf_syms[i].slot = dlsym(handle, pybpf_libbpf_syms[i].name);
		if (!*pybpf_libbpf_syms[i].slot && pybpf_libbpf_syms[i].required)
			missing++;
	}
	/* Too old (MISSING > 0): the table stays as bound, so the caller can still ask
	 * the version functions (when present) and list what is missing, and refuse. */
	if (!missing)
		pybpf_libbpf = handle;
	return missing;
}

/* Row I of the function table: its name, *REQUIRED, *BOUND; NULL past the end. */
const char *pybpf_libbpf_sym(int i, int *required, int *bound)
{
	if (i < 0 || (size_t)i >= sizeof(pybpf_libbpf_syms) / sizeof(pybpf_libbpf_syms[0]))
		return NULL;
	*required = pybpf_libbpf_syms[i].required;
	*bound = *pybpf_libbpf_syms[i].slot != NULL;
	return pybpf_libbpf_syms[i].name;
}

/* NAME as exported by the loaded libbpf (any symbol, in the table or not), or NULL. */
void *pybpf_dlsym(const char *name)
{
	return pybpf_libbpf ? dlsym(pybpf_libbpf, name) : NULL;
}

/* perf_event_open(2) for software/hardware/tracepoint/kprobe-PMU events.
 * Returns an fd or -errno.  freq != 0 means SAMPLE is a frequency in Hz. */
int pybpf_perf_event_open(__u32 type, __u64 config, __u64 sample, int freq, int pid, int cpu,
			  int group_fd, __u64 config1, __u64 config2)
{
	struct perf_event_attr attr;
	long fd;

	memset(&attr, 0, sizeof(attr));
	attr.size = sizeof(attr);
	attr.type = type;
	attr.config = config;
	attr.config1 = config1;
	attr.config2 = config2;
	attr.freq = freq ? 1 : 0;
	if (freq)
		attr.sample_freq = sample;
	else
		attr.sample_period = sample;
	attr.disabled = 0;
	fd = syscall(__NR_perf_event_open, &attr, pid, cpu, group_fd, PERF_FLAG_FD_CLOEXEC);
	if (fd < 0)
		return -errno;
	return (int)fd;
}

int pybpf_perf_event_enable(int fd)
{
	if (ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) < 0)
		return -errno;
	return 0;
}

/* bpf(2) with a caller-built attr, for commands whose fields libbpf 1.1 does not
 * pass on (feature probes of newer kernels).  Returns the result or -errno. */
int pybpf_sys_bpf(int cmd, void *attr, unsigned int size)
{
	return (int)pybpf_bpf(cmd, attr, size);
}

/* --- Section handlers for names newer than the linked libbpf (pybpf._sections) --
 *
 * libbpf_register_prog_handler (0.8+) makes libbpf accept SEC("tcx/ingress") and
 * friends with a program type and expected attach type; the setup callback adds
 * the program flags (BPF_F_SLEEPABLE...) carried in the cookie.  Attaching is
 * pybpf's business (pybpf.attach), so no attach callback is registered. */
static int pybpf_sec_setup(struct bpf_program *prog, long cookie)
{
	if (cookie)
		return bpf_program__set_flags(prog, bpf_program__flags(prog) | (__u32)cookie);
	return 0;
}

int pybpf_register_section(const char *sec, int prog_type, int attach_type, __u32 prog_flags)
{
	LIBBPF_OPTS(libbpf_prog_handler_opts, opts,
		    .cookie = (long)prog_flags,
		    .prog_setup_fn = pybpf_sec_setup);

	return libbpf_register_prog_handler(sec, prog_type, attach_type, &opts);
}

/* --- opening ------------------------------------------------------------------ */

/* bpf_object__open_mem of LEN bytes at DATA with the options Object.open passes
 * (each may be NULL but NAME), in one call: the options struct is built here
 * instead of field by field from Python.  NULL with errno set on failure. */
struct bpf_object *pybpf_object_open(const char *data, size_t len, const char *name,
				     const char *kconfig, const char *pin_root_path,
				     const char *btf_custom_path)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts,
		    .object_name = name,
		    .kconfig = kconfig,
		    .pin_root_path = pin_root_path,
		    .btf_custom_path = btf_custom_path);

	return bpf_object__open_mem(data, len, &opts);
}

/* The closer of an Object's owner (pybpf/object.py, run once, when the last use of
 * the object has ended): frees libbpf's object, then closes BTF_FD (the sealed copy of
 * its btf_custom_path; -1: none).  DATA is the image libbpf parsed: passed only so that
 * the closer (a functools.partial of this function) keeps it alive until then.  One C
 * call, so no Python code runs between its steps: a signal handler (Ctrl-C) cannot
 * cut it in half. */
void pybpf_object_free(struct bpf_object *obj, const char *data, int btf_fd)
{
	(void)data;
	bpf_object__close(obj);
	if (btf_fd >= 0)
		close(btf_fd);
}

/* --- global variables before load ------------------------------------------- */

/* The internal maps of OBJ (global-variable sections: libbpf names them
 * "<prefix>.rodata[.suffix]", ".bss", ".data[.suffix]"...), in libbpf's order: what
 * Object.set_rodata and obj.rodata/.bss/.data use.  VIDS (when not NULL) gets the BTF
 * value type id (DATASEC) of the first MAX of them.  Returns how many there are (may
 * exceed MAX: call again with room for all). */
int pybpf_internal_maps(struct bpf_object *obj, __u32 *vids, int max)
{
	struct bpf_map *m;
	int n = 0;

	bpf_object__for_each_map(m, obj) {
		if (!bpf_map__is_internal(m))
			continue;
		if (vids && n < max)
			vids[n] = bpf_map__btf_value_type_id(m);
		n++;
	}
	return n;
}

/* The I-th internal map of OBJ (in pybpf_internal_maps' order), or NULL: so that an
 * open that sets a global wraps that map alone. */
struct bpf_map *pybpf_internal_map(struct bpf_object *obj, int i)
{
	struct bpf_map *m;

	bpf_object__for_each_map(m, obj) {
		if (bpf_map__is_internal(m) && i-- == 0)
			return m;
	}
	return NULL;
}

/* Copy LEN bytes from DATA at OFFSET of MAP's initial value (a global-variable
 * section before load), in one call.  -1 (nothing written) when MAP has no initial
 * value or the range does not fit in it. */
int pybpf_write_initial_value(struct bpf_map *map, size_t offset, const void *data,
			      size_t len)
{
	size_t size = 0;
	char *cur = bpf_map__initial_value(map, &size);

	if (!cur || offset > size || len > size - offset)
		return -1;
	memcpy(cur + offset, data, len);
	return 0;
}

/* pybpf_write_initial_value() on internal map I of OBJ: what a global's write before
 * load is (Object._write_initial_value), without a wrapper of the map. */
int pybpf_write_internal(struct bpf_object *obj, int i, size_t offset, const void *data,
			 size_t len)
{
	struct bpf_map *m = pybpf_internal_map(obj, i);

	return m ? pybpf_write_initial_value(m, offset, data, len) : -1;
}

/* The initial value of internal map I of OBJ (its size in *SIZE), or NULL. */
const void *pybpf_internal_initial_value(struct bpf_object *obj, int i, size_t *size)
{
	struct bpf_map *m = pybpf_internal_map(obj, i);

	return m ? bpf_map__initial_value(m, size) : NULL;
}
