/* SPDX-License-Identifier: Apache-2.0 */
/* The perf buffer reader (pybpf.perfbuf.PerfBuffer): libbpf sets the per-CPU
 * buffers up (perf_buffer__new on a dup of the map fd, so that freeing them never
 * touches an fd number the map's object has closed and someone else reuses);
 * pybpf reads their mmap()ed pages itself (perf_buffer__buffer()), never through
 * libbpf's perf_buffer__poll/consume, so the sample callbacks below never run.
 *
 * struct pybpf_perf_reader owns the perf_buffer, the lock and the lifetime
 * (reader.c): every exported call takes the lock and answers PYBPF_CLOSED once
 * the reader is closed. */

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
			PYBPF_SIZE_SWITCH(b->fixed, PYBPF_FIXED, 12, 20, 28, 36, 44, 52, 68);
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

static void pybpf_perf_sample_unused(void *ctx, int cpu, void *data, __u32 size)
{
}

static void pybpf_perf_lost_unused(void *ctx, int cpu, __u64 cnt)
{
}

struct pybpf_perf_reader {
	struct pybpf_core core;
	struct perf_buffer *pb;
	int map_fd;		/* the dup perf_buffer__new was given */
	int nbuf;
	int turn;		/* the buffer a step looks at first */
	size_t page_size;
	__u32 cpus[];		/* buffer i holds CPU cpus[i] */
};

/* Open PAGE_CNT pages per CPU on the perf event array MAP_FD; CPUS[i] (NCPUS of
 * them) is the CPU of buffer i.  NULL with *ERR = -errno on failure. */
struct pybpf_perf_reader *pybpf_perf_reader_new(int map_fd, size_t page_cnt, const __u32 *cpus,
						int ncpus, int *err)
{
	struct pybpf_perf_reader *pr;
	int fd, i;

	pr = calloc(1, sizeof(*pr) + (size_t)(ncpus > 0 ? ncpus : 1) * sizeof(__u32));
	if (!pr) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = pybpf_core_init(&pr->core);
	if (*err) {
		free(pr);
		return NULL;
	}
	fd = fcntl(map_fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0) {
		*err = -errno;
		goto fail;
	}
	pr->map_fd = fd;
	pr->pb = perf_buffer__new(fd, page_cnt, pybpf_perf_sample_unused, pybpf_perf_lost_unused,
				  NULL, NULL);
	if (!pr->pb) {
		*err = -errno;
		goto fail;
	}
	pr->nbuf = (int)perf_buffer__buffer_cnt(pr->pb);
	for (i = 0; i < pr->nbuf; i++)
		pr->cpus[i] = i < ncpus ? cpus[i] : (__u32)-1;
	pr->page_size = (size_t)sysconf(_SC_PAGESIZE);
	*err = pybpf_core_watch(&pr->core, perf_buffer__epoll_fd(pr->pb), 0);
	if (*err)
		goto fail;
	return pr;
fail:
	if (pr->pb)
		perf_buffer__free(pr->pb);
	if (pr->map_fd > 0)
		close(pr->map_fd);
	pybpf_core_destroy(&pr->core);
	free(pr);
	return NULL;
}

/* Close: wake every waiter, free the per-CPU buffers and the map fd's dup.
 * Idempotent, from any thread. */
void pybpf_perf_reader_close(struct pybpf_perf_reader *pr)
{
	pthread_mutex_lock(&pr->core.lock);
	if (pybpf_core_shut(&pr->core)) {
		perf_buffer__free(pr->pb);
		pr->pb = NULL;
		close(pr->map_fd);
		pr->map_fd = -1;
	}
	pthread_mutex_unlock(&pr->core.lock);
}

void pybpf_perf_reader_free(struct pybpf_perf_reader *pr)
{
	if (!pr)
		return;
	pybpf_perf_reader_close(pr);
	pybpf_core_destroy(&pr->core);
	free(pr);
}

int pybpf_perf_reader_buffer_cnt(struct pybpf_perf_reader *pr)
{
	return pr->nbuf;
}

static int pybpf_perf_reader_avail_locked(void *ctx)
{
	struct pybpf_perf_reader *pr = ctx;
	int i;

	for (i = 0; i < pr->nbuf; i++) {
		struct perf_event_mmap_page *mp;
		size_t size;
		void *base;

		if (perf_buffer__buffer(pr->pb, i, &base, &size))
			continue;
		mp = base;
		if (__atomic_load_n(&mp->data_head, __ATOMIC_ACQUIRE) != mp->data_tail)
			return 1;
	}
	return 0;
}

long pybpf_perf_reader_wait(struct pybpf_perf_reader *pr, int timeout_ms)
{
	return pybpf_core_wait(&pr->core, timeout_ms, pybpf_perf_reader_avail_locked, pr);
}

int pybpf_perf_reader_hold(struct pybpf_perf_reader *pr)
{
	return pybpf_core_hold(&pr->core);
}

void pybpf_perf_reader_unhold(struct pybpf_perf_reader *pr)
{
	pybpf_core_unhold(&pr->core);
}

int pybpf_perf_reader_fileno(struct pybpf_perf_reader *pr)
{
	return pybpf_core_fileno(&pr->core);
}

/* One step: move samples of every CPU's buffer, taking turns, into B until it
 * holds MAX_BYTES (or its lent buffer is full and may not grow): the rest waits
 * in the kernel.  Lost-sample records are added to B's counts.  Returns the
 * number of samples moved, PYBPF_CLOSED or -errno. */
long pybpf_perf_reader_drain(struct pybpf_perf_reader *pr, struct pybpf_batch *b,
			     size_t max_bytes)
{
	long total = 0, rc;
	int k, nbuf;

	pthread_mutex_lock(&pr->core.lock);
	if (pr->core.closed) {
		pthread_mutex_unlock(&pr->core.lock);
		return PYBPF_CLOSED;
	}
	nbuf = pr->nbuf;
	for (k = 0; k < nbuf; k++) {
		int i = (pr->turn + k) % nbuf;
		size_t size;
		void *base;

		rc = perf_buffer__buffer(pr->pb, i, &base, &size);
		if (rc)
			rc = rc < 0 ? rc : -EINVAL;
		else
			rc = pybpf_perf_drain_buf(base, size, pr->page_size, b, pr->cpus[i],
						  max_bytes);
		if (rc == -ENOBUFS || (rc >= 0 && b->len >= max_bytes)) {
			total += rc > 0 ? rc : 0;
			pr->turn = i + 1;
			break;	/* full: the rest waits in the kernel */
		}
		if (rc < 0) {
			total = total ? total : rc;
			break;
		}
		total += rc;
	}
	pthread_mutex_unlock(&pr->core.lock);
	return total;
}
