/* pybpf's C helpers, compiled into the cffi extension (pybpf._libbpf).
 *
 * Kept small: only what Python cannot do well through cffi -- formatting
 * libbpf's va_list log callback, probing optional libbpf symbols, and
 * perf_event_open(2), which has no libc wrapper.
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

#include "pybpf_optional.h"

static void _pybpf_on_log(int level, const char *msg);

/* libbpf hands its print callback a format and a va_list; cffi cannot pass a
 * va_list to Python, so format here and hand Python a finished string. */
static int pybpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char small[512];
	va_list copy;
	int n;
	int saved = errno;

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

/* NAME as exported by the libbpf that is loaded (possibly newer than the headers
 * this extension was compiled against), or NULL. The default version of the
 * symbol, as a program linked against that libbpf would get it. pybpf/_ffi.py
 * casts it to the signature its OPTIONAL table gives. */
void *pybpf_dlsym(const char *name)
{
	static void *handle;

	if (!handle)
		handle = dlopen("libbpf.so.1", RTLD_NOW | RTLD_NOLOAD);
	if (!handle)
		return NULL;
	return dlsym(handle, name);
}

int pybpf_symbol_present(const char *name)
{
	return pybpf_dlsym(name) != NULL;
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
	long ret = syscall(__NR_bpf, cmd, attr, size);

	return ret < 0 ? -errno : (int)ret;
}

/* --- Event streams (pybpf.ringbuf, pybpf.perfbuf) ----------------------------
 *
 * A batch is one growable contiguous buffer of records, packed back to back,
 * with parallel arrays of offsets, sizes and tags (ring index or CPU), written
 * only once records stop being uniform (lazy).  Python lends the buffer and
 * views it, or copies it out in one memcpy: no callback per record.
 *
 * A ring is a BPF_MAP_TYPE_RINGBUF read directly through its mmap()ed pages,
 * per the kernel's ABI (Documentation/bpf/ringbuf.rst): a read-write page with
 * the consumer position, then a read-only page with the producer position
 * followed by the data area mapped twice, so a record never wraps.  Each
 * record starts with an 8-byte header whose first word is its length plus the
 * BUSY (not yet committed) and DISCARD bits. */

#include "pybpf_batch.h"

struct pybpf_ring {
	int map_fd;
	size_t page_size;
	unsigned long mask;
	size_t data_map_len;
	unsigned long *consumer_pos;
	unsigned long *producer_pos;
	char *data;
};

struct pybpf_batch *pybpf_batch_new(size_t data_cap, size_t rec_cap, int ncpu)
{
	struct pybpf_batch *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	if (data_cap < 4096)
		data_cap = 4096;
	if (rec_cap < 64)
		rec_cap = 64;
	b->data = malloc(data_cap);
	b->offs = malloc(rec_cap * sizeof(__u32));
	b->sizes = malloc(rec_cap * sizeof(__u32));
	b->tags = malloc(rec_cap * sizeof(__u32));
	b->ncpu = ncpu > 0 ? ncpu : 0;
	b->lost_cpu = calloc(b->ncpu ? b->ncpu : 1, sizeof(__u64));
	if (!b->data || !b->offs || !b->sizes || !b->tags || !b->lost_cpu) {
		free(b->data);
		free(b->offs);
		free(b->sizes);
		free(b->tags);
		free(b->lost_cpu);
		free(b);
		return NULL;
	}
	b->cap = data_cap;
	b->ncap = rec_cap;
	return b;
}


void pybpf_batch_free(struct pybpf_batch *b)
{
	if (!b)
		return;
	if (!b->external)
		free(b->data);
	free(b->offs);
	free(b->sizes);
	free(b->tags);
	free(b->lost_cpu);
	free(b);
}

void pybpf_batch_reset(struct pybpf_batch *b)
{
	b->len = 0;
	b->n = 0;
	b->fixed = 0;
	b->tags_mixed = 0;
	b->lazy = 0;
}

/* Copy records into DATA (CAP bytes, owned by Python) from now on.  Python
 * lends a fresh buffer whenever views of the previous one are still alive, so
 * records handed out are never overwritten.  The batch must be empty.  GROW:
 * when it is full, move to a malloc()ed buffer (perf samples cannot wait in
 * the kernel) instead of refusing records with -ENOBUFS (ring records can). */
void pybpf_batch_lend(struct pybpf_batch *b, char *data, size_t cap, int grow)
{
	if (!b->external)
		free(b->data);
	b->grow = grow;
	b->data = data;
	b->cap = cap;
	b->external = 1;
	b->len = 0;
	b->n = 0;
	b->fixed = 0;
	b->tags_mixed = 0;
	b->lazy = 0;
}

/* Room for one more entry in the offs/sizes/tags arrays; 0 or -ENOMEM. */
static int pybpf_batch_grow_recs(struct pybpf_batch *b, size_t need)
{
	size_t ncap = b->ncap;
	__u32 *o;

	if (need <= ncap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	o = realloc(b->offs, ncap * sizeof(__u32));
	if (!o)
		return -ENOMEM;
	b->offs = o;
	o = realloc(b->sizes, ncap * sizeof(__u32));
	if (!o)
		return -ENOMEM;
	b->sizes = o;
	o = realloc(b->tags, ncap * sizeof(__u32));
	if (!o)
		return -ENOMEM;
	b->tags = o;
	b->ncap = ncap;
	return 0;
}

/* Make room for one more record of SIZE bytes; 0, -ENOBUFS (lent buffer full)
 * or -ENOMEM (batch intact). */
static int pybpf_batch_reserve(struct pybpf_batch *b, size_t size, __u32 tag)
{
	if (b->len + size > b->cap) {
		size_t cap = b->cap * 2;
		char *p;

		if (b->external) {
			if (!b->grow && b->n)
				return -ENOBUFS;
			/* (a record larger than the whole lent buffer moves too: it
			 * could never be taken otherwise) */
			/* move out of the lent buffer into our own, which can grow */
			while (cap < b->len + size)
				cap *= 2;
			p = malloc(cap);
			if (!p)
				return -ENOMEM;
			memcpy(p, b->data, b->len);
			b->data = p;
			b->cap = cap;
			b->external = 0;
		}

		while (cap < b->len + size)
			cap *= 2;
		if (cap > 0xffffffffUL)
			return -ENOMEM; /* offsets are 32-bit: hand over a batch first */
		p = realloc(b->data, cap);
		if (!p)
			return -ENOMEM;
		b->data = p;
		b->cap = cap;
	}
	if (b->lazy && (size != b->fixed || tag != b->tag0)) {
		/* the first record that differs: write the arrays for those before it */
		size_t i;

		if (pybpf_batch_grow_recs(b, b->n + 1))
			return -ENOMEM;
		for (i = 0; i < b->n; i++) {
			b->offs[i] = (__u32)(i * b->fixed);
			b->sizes[i] = b->fixed;
			b->tags[i] = b->tag0;
		}
		b->lazy = 0;
	}
	if (!b->lazy && b->n && pybpf_batch_grow_recs(b, b->n + 1))
		return -ENOMEM;
	return 0;
}

/* Small records (the usual events) are copied inline, 8 bytes at a time: a
 * libc memcpy() call per record costs more than the copy itself. */
static inline void pybpf_copy(char *dst, const char *src, __u32 size)
{
	__u32 i = 0;

	if (size > 64) {
		memcpy(dst, src, size);
		return;
	}
	for (; i + 8 <= size; i += 8) {
		__u64 w;

		memcpy(&w, src + i, 8);
		memcpy(dst + i, &w, 8);
	}
	for (; i < size; i++)
		dst[i] = src[i];
}

/* Append one record (after pybpf_batch_reserve(B, SIZE, TAG) succeeded).  While
 * all records share one size and tag, only the bytes are written (lazy). */
static inline void pybpf_batch_put(struct pybpf_batch *b, const void *data, __u32 size,
				   __u32 tag)
{
	pybpf_copy(b->data + b->len, data, size);
	if (b->n == 0) {
		b->fixed = size;
		b->tag0 = tag;
		b->lazy = 1;
	} else if (!b->lazy) {
		if (b->fixed != size)
			b->fixed = PYBPF_MIXED;
		if (b->tags[b->n - 1] != tag)
			b->tags_mixed = 1;
	}
	if (!b->lazy) {
		b->offs[b->n] = (__u32)b->len;
		b->sizes[b->n] = size;
		b->tags[b->n] = tag;
	}
	b->n++;
	b->len += size;
}

struct pybpf_ring *pybpf_ring_open(int map_fd, int *err)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	struct pybpf_ring *r;
	void *p;

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(map_fd, &info, &len) < 0) {
		*err = -errno;
		return NULL;
	}
	if (info.type != BPF_MAP_TYPE_RINGBUF) {
		*err = -EINVAL;
		return NULL;
	}
	r = calloc(1, sizeof(*r));
	if (!r) {
		*err = -ENOMEM;
		return NULL;
	}
	r->map_fd = map_fd;
	r->page_size = (size_t)sysconf(_SC_PAGESIZE);
	r->mask = info.max_entries - 1;
	p = mmap(NULL, r->page_size, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (p == MAP_FAILED) {
		*err = -errno;
		free(r);
		return NULL;
	}
	r->consumer_pos = p;
	r->data_map_len = r->page_size + 2 * (size_t)info.max_entries;
	p = mmap(NULL, r->data_map_len, PROT_READ, MAP_SHARED, map_fd, (off_t)r->page_size);
	if (p == MAP_FAILED) {
		*err = -errno;
		munmap(r->consumer_pos, r->page_size);
		free(r);
		return NULL;
	}
	r->producer_pos = p;
	r->data = (char *)p + r->page_size;
	*err = 0;
	return r;
}

void pybpf_ring_close(struct pybpf_ring *r)
{
	if (!r)
		return;
	munmap(r->producer_pos, r->data_map_len);
	munmap(r->consumer_pos, r->page_size);
	free(r);
}

/* Bytes written by producers and not yet consumed (records may still be busy). */
__u64 pybpf_ring_avail(const struct pybpf_ring *r)
{
	unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
	unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);

	return prod - cons;
}

__u64 pybpf_ring_size(const struct pybpf_ring *r)
{
	return (__u64)r->mask + 1;
}

/* Move committed records from the ring into the batch (tagged TAG) until the
 * ring is empty, a record is still being written, MAX_RECORDS were moved, or
 * the batch holds MAX_BYTES (or its lent buffer is full).  Discarded records
 * are skipped.  The consumer position is published once, after the records
 * were copied: a record is either in the batch or still in the ring.  Returns
 * the number moved, or -ENOBUFS/-ENOMEM when not even one record fitted. */

/* The fast path of pybpf_ring_drain: records of SIZE bytes (a constant after
 * inlining, so the copy is a few vector moves) appended to a lazy batch while
 * each header says exactly SIZE -- committed, not discarded, the same size --
 * and they fit below LIMIT.  Stops at anything else, for the general loop. */
static inline __attribute__((always_inline)) void
pybpf_ring_drain_fixed(struct pybpf_ring *r, struct pybpf_batch *b, unsigned long *consp,
		       unsigned long *prodp, long *movedp, size_t max_records, size_t limit,
		       const __u32 size)
{
	const unsigned long step = (BPF_RINGBUF_HDR_SZ + size + 7) & ~7UL;
	const char *ring = r->data;
	const unsigned long mask = r->mask;
	unsigned long cons = *consp, prod = *prodp;
	char *dst = b->data + b->len;
	const char *end = b->data + limit;
	size_t left = max_records - (size_t)*movedp;
	size_t n = 0;

	while (cons < prod && n < left) {
		const char *hdr = ring + (cons & mask);

		if (__atomic_load_n((const __u32 *)hdr, __ATOMIC_ACQUIRE) != size ||
		    dst + size > end)
			break;
		pybpf_copy(dst, hdr + BPF_RINGBUF_HDR_SZ, size);
		dst += size;
		n++;
		cons += step;
		if (cons >= prod)
			prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
	}
	b->len = (size_t)(dst - b->data);
	b->n += n;
	*movedp += (long)n;
	*consp = cons;
	*prodp = prod;
}

long pybpf_ring_drain(struct pybpf_ring *r, struct pybpf_batch *b, __u32 tag, size_t max_bytes,
		      size_t max_records)
{
	unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
	unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
	unsigned long start = cons;
	long moved = 0;
	int err = 0;

	if (cons < prod && (b->n == 0 || (b->lazy && b->tag0 == tag))) {
		/* the usual stream: records of one size, one ring -- no per-record
		 * bookkeeping but the copy (batch arrays stay unwritten: lazy) */
		__u32 word = __atomic_load_n((const __u32 *)(r->data + (cons & r->mask)),
					     __ATOMIC_ACQUIRE);
		__u32 size = b->n ? b->fixed : word;
		size_t limit = max_bytes < b->cap ? max_bytes : b->cap;

		if (word == size && size && b->len + size <= limit &&
		    !(word & (BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT))) {
			if (b->n == 0) {
				b->fixed = size;
				b->tag0 = tag;
				b->lazy = 1;
			}
#define PYBPF_FIXED(S) pybpf_ring_drain_fixed(r, b, &cons, &prod, &moved, max_records, limit, S)
			switch (size) {
			case 8: PYBPF_FIXED(8); break;
			case 16: PYBPF_FIXED(16); break;
			case 24: PYBPF_FIXED(24); break;
			case 32: PYBPF_FIXED(32); break;
			case 40: PYBPF_FIXED(40); break;
			case 48: PYBPF_FIXED(48); break;
			case 64: PYBPF_FIXED(64); break;
			default: PYBPF_FIXED(size); break;
#undef PYBPF_FIXED
			}
		}
	}
	while (cons < prod && (size_t)moved < max_records) {
		const char *hdr = r->data + (cons & r->mask);
		__u32 word = __atomic_load_n((const __u32 *)hdr, __ATOMIC_ACQUIRE);
		__u32 size;

		if (word & BPF_RINGBUF_BUSY_BIT)
			break;
		size = word & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
		if (!(word & BPF_RINGBUF_DISCARD_BIT)) {
			if (moved && b->len + size > max_bytes)
				break;
			err = pybpf_batch_reserve(b, size, tag);
			if (err)
				break;
			pybpf_batch_put(b, hdr + BPF_RINGBUF_HDR_SZ, size, tag);
			moved++;
		}
		cons += (BPF_RINGBUF_HDR_SZ + size + 7) & ~7UL;
		if (cons >= prod)  /* caught up: look again before publishing */
			prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
	}
	if (cons != start)
		__atomic_store_n(r->consumer_pos, cons, __ATOMIC_RELEASE);
	if (err && !moved)
		return err;
	return moved;
}

/* Zero-copy reading: describe the committed records at the ring's head without
 * consuming them, for Python to view in place (the data area is mapped twice,
 * so records from START on are contiguous for up to the ring's size).  Stops
 * at a record still being written, after MAX_BYTES of ring space, or at the
 * end.  Sets *START and *END (ring positions) and *FIXED: the common size of
 * all records when none was discarded, else PYBPF_MIXED -- then B (if not
 * NULL) receives each record's offset (relative to data + (START & mask)) and
 * size: the walk starts over in that mode (MIXED != 0) when it finds sizes
 * differ.  Returns the number of records; nothing is consumed until
 * pybpf_ring_release(END). */
long pybpf_ring_peek(struct pybpf_ring *r, size_t max_bytes, __u64 *start, __u64 *end,
		     __u32 *fixed, struct pybpf_batch *b, __u32 tag, int mixed)
{
	unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
	unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
	unsigned long first = cons;
	__u32 common = mixed ? PYBPF_MIXED : 0;
	long n = 0;

	if (max_bytes > r->mask + 1)
		max_bytes = r->mask + 1;
	while (cons < prod) {
		const char *hdr = r->data + (cons & r->mask);
		__u32 word = __atomic_load_n((const __u32 *)hdr, __ATOMIC_ACQUIRE);
		__u32 size, step;

		if (word & BPF_RINGBUF_BUSY_BIT)
			break;
		size = word & ~(BPF_RINGBUF_BUSY_BIT | BPF_RINGBUF_DISCARD_BIT);
		step = (BPF_RINGBUF_HDR_SZ + size + 7) & ~7U;
		if (cons + step - first > max_bytes)
			break;
		if (word & BPF_RINGBUF_DISCARD_BIT) {
			if (common != PYBPF_MIXED && b) /* offsets needed: start again */
				return pybpf_ring_peek(r, max_bytes, start, end, fixed, b, tag, 1);
			common = PYBPF_MIXED;
		} else {
			if (b && common == PYBPF_MIXED) {
				b->lazy = 0;
				if (pybpf_batch_grow_recs(b, b->n + 1))
					break;
				b->offs[b->n] = (__u32)(cons - first + BPF_RINGBUF_HDR_SZ);
				b->sizes[b->n] = size;
				b->tags[b->n] = tag;
				b->n++;
			}
			if (n == 0 && common == 0) {
				common = size;
			} else if (common != size && common != PYBPF_MIXED) {
				common = PYBPF_MIXED;
				if (b) /* offsets are needed after all: start again */
					return pybpf_ring_peek(r, max_bytes, start, end, fixed, b, tag,
							       1);
			}
			n++;
		}
		cons += step;
		if (cons >= prod)
			prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);
	}
	*start = first;
	*end = cons;
	*fixed = common;
	return n;
}

/* Give ring space up to position END back to the producers. */
void pybpf_ring_release(struct pybpf_ring *r, __u64 end)
{
	__atomic_store_n(r->consumer_pos, (unsigned long)end, __ATOMIC_RELEASE);
}

/* Mask of the ring's data area (size - 1): position & mask is the data offset. */
__u64 pybpf_ring_mask(const struct pybpf_ring *r)
{
	return r->mask;
}

/* Perf buffer: libbpf sets the per-CPU buffers up (perf_buffer__new needs a
 * sample callback) and pybpf reads them with pybpf_perf_drain() below; pybpf
 * never runs libbpf's own reader (perf_buffer__poll/consume), so these callbacks
 * only keep the batch correct if something did: the general append, no fast path. */
static void pybpf_perf_sample(void *ctx, int cpu, void *data, __u32 size)
{
	struct pybpf_batch *b = ctx;

	if (pybpf_batch_reserve(b, size, (__u32)cpu)) {
		/* no memory to keep it: count it as lost rather than drop it silently */
		b->lost++;
		if (cpu >= 0 && cpu < b->ncpu)
			b->lost_cpu[cpu]++;
		return;
	}
	pybpf_batch_put(b, data, size, (__u32)cpu);
}

static void pybpf_perf_lost(void *ctx, int cpu, __u64 cnt)
{
	struct pybpf_batch *b = ctx;

	b->lost += cnt;
	if (cpu >= 0 && cpu < b->ncpu)
		b->lost_cpu[cpu] += cnt;
}

struct perf_buffer *pybpf_perf_buffer_new(int map_fd, size_t page_cnt, struct pybpf_batch *b)
{
	return perf_buffer__new(map_fd, page_cnt, pybpf_perf_sample, pybpf_perf_lost, b, NULL);
}

/* One per-CPU perf buffer read directly, as perf_buffer__buffer() hands it out
 * (a custom consumer, per its documentation): BASE is the perf_event_mmap_page,
 * the data area (a power of two, DATA_SIZE bytes) follows one page later.
 * Records are perf_event_header + body; PERF_RECORD_SAMPLE bodies (libbpf sets
 * PERF_SAMPLE_RAW) are a u32 size and the raw bytes, PERF_RECORD_LOST bodies
 * an id and a count.  Samples go into B tagged CPU until B holds MAX_BYTES (or
 * its lent buffer is full and may not grow): the rest waits in the kernel.
 * data_tail is published once, after the copies.  Returns the number of
 * samples moved, or -ENOBUFS/-ENOMEM when not even one fitted (or -errno from
 * perf_buffer__buffer() for a bad IDX). */
/* The fast path of pybpf_perf_drain_buf: samples of SIZE raw bytes (a constant
 * after inlining) appended to a lazy batch while each record is a sample of
 * that size that does not wrap and fits below LIMIT; the step to the next
 * record is then known before the record is read.  Stops at anything else. */
static inline __attribute__((always_inline)) void
pybpf_perf_drain_fixed(const char *data, __u64 data_size, __u64 *tailp, __u64 head,
		       struct pybpf_batch *b, size_t limit, const __u32 size)
{
	/* header as one word: type (low 32 bits) and size (high 16); misc varies */
	const __u64 esize = sizeof(struct perf_event_header) + 4 + size;
	const __u64 want = (__u64)PERF_RECORD_SAMPLE | (esize << 48);
	const __u64 mask = data_size - 1;
	__u64 tail = *tailp;
	char *dst = b->data + b->len;
	const char *end = b->data + limit;
	size_t n = 0;

	while (tail < head) {
		__u64 off = tail & mask;
		const char *p = data + off;
		__u64 word;
		__u32 raw;

		if (off + esize > data_size || dst + size > end)
			break;
		memcpy(&word, p, 8);
		memcpy(&raw, p + 8, 4);
		if ((word & 0xffff0000ffffffffULL) != want || raw != size)
			break;
		pybpf_copy(dst, p + 12, size);
		dst += size;
		n++;
		tail += esize;
	}
	b->len = (size_t)(dst - b->data);
	b->n += n;
	*tailp = tail;
}

static long pybpf_perf_drain_buf(void *base, size_t data_size, size_t page_size,
				 struct pybpf_batch *b, __u32 cpu, size_t max_bytes)
{
	struct perf_event_mmap_page *mp = base;
	const char *data = (const char *)base + page_size;
	const __u64 mask = data_size - 1;
	__u64 head = __atomic_load_n(&mp->data_head, __ATOMIC_ACQUIRE);
	__u64 tail = mp->data_tail;
	__u64 start = tail;
	long moved = 0;
	int err = 0;

	while (tail < head) {
		const struct perf_event_header *eh = (const void *)(data + (tail & mask));
		size_t limit = max_bytes < b->cap ? max_bytes : b->cap;

		if (b->lazy && cpu == b->tag0 && b->len + b->fixed <= limit) {
			/* the usual stream: more samples like the ones before */
			__u64 t0 = tail;
			size_t n0 = b->n;

#define PYBPF_FIXED(S) pybpf_perf_drain_fixed(data, data_size, &tail, head, b, limit, S)
			switch (b->fixed) {
			case 12: PYBPF_FIXED(12); break;
			case 20: PYBPF_FIXED(20); break;
			case 28: PYBPF_FIXED(28); break;
			case 36: PYBPF_FIXED(36); break;
			case 44: PYBPF_FIXED(44); break;
			case 52: PYBPF_FIXED(52); break;
			case 60: PYBPF_FIXED(60); break;
			case 68: PYBPF_FIXED(68); break;
			default: PYBPF_FIXED(b->fixed); break;
			}
#undef PYBPF_FIXED
			moved += (long)(b->n - n0);
			if (tail != t0)
				continue;	/* then the record that stopped it, below */
		}
		__u16 esize = eh->size;

		if (esize < sizeof(*eh))
			break; /* cannot happen; never spin on it */
		if (eh->type == PERF_RECORD_SAMPLE) {
			/* header and size are 8-byte aligned: they never wrap; the bytes may */
			__u32 size = *(const __u32 *)(data + ((tail + 8) & mask));
			__u64 off = (tail + 12) & mask;
			const char *src = data + off;

			if (moved && b->len + size > max_bytes)
				break;
			if (b->lazy && size == b->fixed && cpu == b->tag0 &&
			    b->len + size <= b->cap && off + size <= data_size) {
				/* the usual case: one more sample like those before it */
				pybpf_copy(b->data + b->len, src, size);
				b->len += size;
				b->n++;
			} else {
				err = pybpf_batch_reserve(b, size, cpu);
				if (err)
					break;
				if (off + size <= data_size) {
					pybpf_batch_put(b, src, size, cpu);
				} else {	/* wrapped: the tail end, then the start */
					__u32 first = (__u32)(data_size - off);
					char *tmp = malloc(size);

					if (!tmp) {
						err = -ENOMEM;
						break;
					}
					memcpy(tmp, src, first);
					memcpy(tmp + first, data, size - first);
					pybpf_batch_put(b, tmp, size, cpu);
					free(tmp);
				}
			}
			moved++;
		} else if (eh->type == PERF_RECORD_LOST) {
			__u64 lost = *(const __u64 *)(data + ((tail + 16) & mask));

			b->lost += lost;
			if (cpu < (__u32)b->ncpu)
				b->lost_cpu[cpu] += lost;
		}
		tail += esize;
	}
	if (tail != start)
		__atomic_store_n(&mp->data_tail, tail, __ATOMIC_RELEASE);
	if (err && !moved)
		return err;
	return moved;
}

long pybpf_perf_drain(struct perf_buffer *pb, int idx, struct pybpf_batch *b, __u32 cpu,
		      size_t max_bytes)
{
	static size_t page_size;
	void *base;
	size_t size;
	int err = perf_buffer__buffer(pb, idx, &base, &size);

	if (err)
		return err < 0 ? err : -EINVAL;
	if (!page_size)
		page_size = (size_t)sysconf(_SC_PAGESIZE);
	return pybpf_perf_drain_buf(base, size, page_size, b, cpu, max_bytes);
}
