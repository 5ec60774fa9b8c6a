/* SPDX-License-Identifier: Apache-2.0 */
/* Record batches: what the ring and perf readers (ring.c, perf.c) copy records into.
 *
 * A batch is one growable contiguous buffer of records, packed back to back,
 * with parallel arrays of offsets, sizes and tags (ring index or CPU), written
 * only once records stop being uniform (lazy).  Python lends the buffer and
 * views it, or copies it out in one memcpy: no callback per record.  struct
 * pybpf_batch is declared in pybpf/_cdef/pybpf_batch.h (shared with cffi).
 *
 * Compiled into the cffi extension (build.py concatenates pybpf/_cdef/pybpf.c and
 * pybpf/_native/{batch,ring,perf}.c into one translation unit). */
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include "pybpf_batch.h"

/* The fast paths of both readers: call F(S) with S a compile-time constant for
 * the usual event sizes (so each copy is a few vector moves), else with SIZE. */
#define PYBPF_SIZE_SWITCH(size, F, S0, S1, S2, S3, S4, S5, S6)		\
	do {								\
		switch (size) {						\
		case S0: F(S0); break;					\
		case S1: F(S1); break;					\
		case S2: F(S2); break;					\
		case S3: F(S3); break;					\
		case S4: F(S4); break;					\
		case S5: F(S5); break;					\
		case S6: F(S6); break;					\
		default: F(size); break;				\
		}							\
	} while (0)

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
