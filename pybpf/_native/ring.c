/* SPDX-License-Identifier: Apache-2.0 */
/* The ring buffer reader (pybpf.ringbuf.RingBuffer): BPF_MAP_TYPE_RINGBUF maps
 * read directly through their mmap()ed pages, per the kernel's ABI
 * (Documentation/bpf/ringbuf.rst): a read-write page with the consumer position,
 * then a read-only page with the producer position followed by the data area
 * mapped twice, so a record never wraps.  Each record starts with an 8-byte
 * header whose first word is its length plus the BUSY (not yet committed) and
 * DISCARD bits.
 *
 * struct pybpf_ring_reader owns its rings (a dup of each map fd, the mappings),
 * the lock and the lifetime (reader.c): every exported call takes the lock and
 * answers PYBPF_CLOSED once the reader is closed. */

struct pybpf_ring {
	int map_fd;		/* a dup owned by the ring */
	__u32 map_id;
	size_t page_size;
	unsigned long mask;
	size_t data_map_len;
	unsigned long *consumer_pos;
	unsigned long *producer_pos;
	char *data;
};

static struct pybpf_ring *pybpf_ring_open(int map_fd, int *err)
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
	r->map_fd = -1;
	r->map_id = info.id;
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

static void pybpf_ring_close(struct pybpf_ring *r)
{
	if (!r)
		return;
	munmap(r->producer_pos, r->data_map_len);
	munmap(r->consumer_pos, r->page_size);
	if (r->map_fd >= 0)
		close(r->map_fd);
	free(r);
}

/* Bytes written by producers and not yet consumed (records may still be busy). */
static __u64 pybpf_ring_avail(const struct pybpf_ring *r)
{
	unsigned long cons = __atomic_load_n(r->consumer_pos, __ATOMIC_ACQUIRE);
	unsigned long prod = __atomic_load_n(r->producer_pos, __ATOMIC_ACQUIRE);

	return prod - cons;
}

static __u64 pybpf_ring_size(const struct pybpf_ring *r)
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

static long pybpf_ring_drain(struct pybpf_ring *r, struct pybpf_batch *b, __u32 tag, size_t max_bytes,
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
			PYBPF_SIZE_SWITCH(size, PYBPF_FIXED, 8, 16, 24, 32, 40, 48, 64);
#undef PYBPF_FIXED
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
 * at a record still being written, after MAX_BYTES of ring space (but takes
 * the first record whatever its size), or at the end.  Sets *START and *END (ring positions) and *FIXED: the common size of
 * all records when none was discarded, else PYBPF_MIXED -- then B (if not
 * NULL) receives each record's offset (relative to data + (START & mask)) and
 * size: the walk starts over in that mode (MIXED != 0) when it finds sizes
 * differ.  Returns the number of records; nothing is consumed until
 * pybpf_ring_release(END). */
static long pybpf_ring_peek(struct pybpf_ring *r, size_t max_bytes, __u64 *start, __u64 *end,
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
		if (cons != first && cons + step - first > max_bytes)
			break;	/* (the first record goes even if larger: never stuck) */
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
static void pybpf_ring_release(struct pybpf_ring *r, __u64 end)
{
	__atomic_store_n(r->consumer_pos, (unsigned long)end, __ATOMIC_RELEASE);
}

/* --- the reader ------------------------------------------------------------------ */

#define PYBPF_MAX_RINGS 64

struct pybpf_ring_reader {
	struct pybpf_core core;
	int nrings;
	int turn;		/* the ring a step (or a peek) looks at first */
	struct pybpf_ring *rings[PYBPF_MAX_RINGS];
};

struct pybpf_ring_reader *pybpf_ring_reader_new(int *err)
{
	struct pybpf_ring_reader *rr = calloc(1, sizeof(*rr));

	if (!rr) {
		*err = -ENOMEM;
		return NULL;
	}
	*err = pybpf_core_init(&rr->core);
	if (*err) {
		free(rr);
		return NULL;
	}
	return rr;
}

static void pybpf_ring_reader_unmap(struct pybpf_ring_reader *rr)
{
	int i;

	for (i = 0; i < rr->nrings; i++) {
		pybpf_ring_close(rr->rings[i]);
		rr->rings[i] = NULL;
	}
	rr->nrings = 0;
}

/* Close: wake every waiter, unmap every ring, close the map fds (the epoll fd
 * goes when the last waiter leaves).  Idempotent, from any thread. */
void pybpf_ring_reader_close(struct pybpf_ring_reader *rr)
{
	pthread_mutex_lock(&rr->core.lock);
	if (pybpf_core_shut(&rr->core))
		pybpf_ring_reader_unmap(rr);
	pthread_mutex_unlock(&rr->core.lock);
}

/* The Python object's finalizer: no call can be in flight. */
void pybpf_ring_reader_free(struct pybpf_ring_reader *rr)
{
	if (!rr)
		return;
	pybpf_ring_reader_close(rr);
	pybpf_core_destroy(&rr->core);
	free(rr);
}

/* Map the ring buffer map MAP_FD (a dup is kept: the caller's fd may close) and
 * watch it.  Returns its tag (index), -EEXIST if this map is read already,
 * -E2BIG past PYBPF_MAX_RINGS, PYBPF_CLOSED or -errno. */
int pybpf_ring_reader_add(struct pybpf_ring_reader *rr, int map_fd)
{
	struct pybpf_ring *r;
	int fd, err, i, tag;

	pthread_mutex_lock(&rr->core.lock);
	if (rr->core.closed) {
		err = PYBPF_CLOSED;
		goto out;
	}
	if (rr->nrings >= PYBPF_MAX_RINGS) {
		err = -E2BIG;
		goto out;
	}
	fd = fcntl(map_fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	r = pybpf_ring_open(fd, &err);
	if (!r) {
		close(fd);
		goto out;
	}
	r->map_fd = fd;
	for (i = 0; i < rr->nrings; i++) {
		if (rr->rings[i]->map_id == r->map_id) {
			pybpf_ring_close(r);
			err = -EEXIST;
			goto out;
		}
	}
	tag = rr->nrings;
	err = pybpf_core_watch(&rr->core, fd, (__u32)tag);
	if (err) {
		pybpf_ring_close(r);
		goto out;
	}
	rr->rings[tag] = r;
	rr->nrings++;
	err = tag;
out:
	pthread_mutex_unlock(&rr->core.lock);
	return err;
}

static int pybpf_ring_reader_avail_locked(void *ctx)
{
	struct pybpf_ring_reader *rr = ctx;
	int i;

	for (i = 0; i < rr->nrings; i++)
		if (pybpf_ring_avail(rr->rings[i]))
			return 1;
	return 0;
}

/* See pybpf_core_wait(): 1, 0, -EINTR or PYBPF_CLOSED. */
long pybpf_ring_reader_wait(struct pybpf_ring_reader *rr, int timeout_ms)
{
	return pybpf_core_wait(&rr->core, timeout_ms, pybpf_ring_reader_avail_locked, rr);
}

int pybpf_ring_reader_hold(struct pybpf_ring_reader *rr)
{
	return pybpf_core_hold(&rr->core);
}

void pybpf_ring_reader_unhold(struct pybpf_ring_reader *rr)
{
	pybpf_core_unhold(&rr->core);
}

int pybpf_ring_reader_fileno(struct pybpf_ring_reader *rr)
{
	return pybpf_core_fileno(&rr->core);
}

/* Bytes produced into the rings and not consumed yet (0 once closed). */
__u64 pybpf_ring_reader_pending(struct pybpf_ring_reader *rr)
{
	__u64 n = 0;
	int i;

	pthread_mutex_lock(&rr->core.lock);
	for (i = 0; i < rr->nrings; i++)
		n += pybpf_ring_avail(rr->rings[i]);
	pthread_mutex_unlock(&rr->core.lock);
	return n;
}

/* Size of ring TAG's data area (0 if there is no such ring). */
__u64 pybpf_ring_reader_size(struct pybpf_ring_reader *rr, int tag)
{
	__u64 n = 0;

	pthread_mutex_lock(&rr->core.lock);
	if (tag >= 0 && tag < rr->nrings)
		n = pybpf_ring_size(rr->rings[tag]);
	pthread_mutex_unlock(&rr->core.lock);
	return n;
}

/* One step: move committed records of every ring, taking turns, into B, at most
 * CAP bytes from each ring (the rest stays in the rings when B's lent buffer is
 * full).  Returns the number of records moved, PYBPF_CLOSED, or -errno (with
 * *FAILED the tag of the ring that failed). */
long pybpf_ring_reader_drain(struct pybpf_ring_reader *rr, struct pybpf_batch *b, size_t cap,
			     int *failed)
{
	long total = 0, rc;
	int k, nr;

	pthread_mutex_lock(&rr->core.lock);
	if (rr->core.closed) {
		pthread_mutex_unlock(&rr->core.lock);
		return PYBPF_CLOSED;
	}
	nr = rr->nrings;
	for (k = 0; k < nr; k++) {
		int tag = nr > 1 ? (rr->turn + k) % nr : 0;

		rc = pybpf_ring_drain(rr->rings[tag], b, (__u32)tag, b->len + cap, (size_t)-1);
		if (rc == -ENOBUFS) {
			rr->turn = tag;	/* this ring goes first next time */
			break;	/* the buffer is full: the rest stays in the rings */
		}
		if (rc < 0) {
			*failed = tag;
			total = total ? total : rc;
			break;
		}
		total += rc;
	}
	pthread_mutex_unlock(&rr->core.lock);
	return total;
}

/* Zero-copy: the committed records at the head of the first ring (taking turns)
 * that has some, described as pybpf_ring_peek() does, with *TAG the ring,
 * *OFFSET where they start in that ring's data area and *SPAN their length there.  Rings holding only discarded
 * records are given back on the way.  Returns the number of records (0: none),
 * or PYBPF_CLOSED.  Nothing is consumed until pybpf_ring_reader_release(). */
long pybpf_ring_reader_peek(struct pybpf_ring_reader *rr, size_t max_bytes, __u64 *end,
			    __u64 *offset, __u64 *span, __u32 *fixed, struct pybpf_batch *b,
			    int *tag)
{
	__u64 start = 0;
	long n = 0;
	int k, nr;

	pthread_mutex_lock(&rr->core.lock);
	if (rr->core.closed) {
		pthread_mutex_unlock(&rr->core.lock);
		return PYBPF_CLOSED;
	}
	nr = rr->nrings;
	for (k = 0; k < nr; k++) {
		int t = (rr->turn + k) % nr;
		struct pybpf_ring *r = rr->rings[t];

		pybpf_batch_reset(b);
		n = pybpf_ring_peek(r, max_bytes, &start, end, fixed, b, (__u32)t, 0);
		if (n == 0) {
			if (*end != start)	/* only discarded records: skip them */
				pybpf_ring_release(r, *end);
			continue;
		}
		rr->turn = t + 1;
		*tag = t;
		*offset = start & r->mask;
		*span = *end - start;
		break;
	}
	pthread_mutex_unlock(&rr->core.lock);
	return n;
}

/* Give ring TAG's space up to position END back to the producers; 0 or
 * PYBPF_CLOSED. */
int pybpf_ring_reader_release(struct pybpf_ring_reader *rr, int tag, __u64 end)
{
	int err = 0;

	pthread_mutex_lock(&rr->core.lock);
	if (rr->core.closed || tag < 0 || tag >= rr->nrings)
		err = PYBPF_CLOSED;
	else
		pybpf_ring_release(rr->rings[tag], end);
	pthread_mutex_unlock(&rr->core.lock);
	return err;
}

/* A read-only mapping of ring TAG's data area (twice, as the kernel maps it) for
 * borrow()'s views, which may outlive the reader: *LEN receives its length, for
 * pybpf_unmap().  NULL with *LEN = -errno on failure (PYBPF_CLOSED once closed). */
void *pybpf_ring_reader_map_data(struct pybpf_ring_reader *rr, int tag, long *len)
{
	struct pybpf_ring *r;
	void *p = NULL;

	pthread_mutex_lock(&rr->core.lock);
	if (rr->core.closed || tag < 0 || tag >= rr->nrings) {
		*len = PYBPF_CLOSED;
		goto out;
	}
	r = rr->rings[tag];
	p = mmap(NULL, r->data_map_len, PROT_READ, MAP_SHARED, r->map_fd, (off_t)r->page_size);
	if (p == MAP_FAILED) {
		*len = -errno;
		p = NULL;
		goto out;
	}
	*len = (long)r->data_map_len;
out:
	pthread_mutex_unlock(&rr->core.lock);
	return p;
}

/* The user ring buffer (pybpf.ringbuf.UserRingBuffer): each call is one cffi call,
 * so no Python signal handler can run between a reservation and what settles it. */

/* Reserve n bytes (waiting up to timeout_ms if >= 0), copy data in and submit.
 * 0, or -errno (ENOSPC: full, E2BIG: too large). */
int pybpf_urb_write(struct user_ring_buffer *rb, const void *data, __u32 n, int timeout_ms)
{
	void *sample = timeout_ms < 0 ? user_ring_buffer__reserve(rb, n)
				      : user_ring_buffer__reserve_blocking(rb, n, timeout_ms);
	if (!sample)
		return -errno;
	memcpy(sample, data, n);
	user_ring_buffer__submit(rb, sample);
	return 0;
}

/* Reserve n bytes into *slot (which must be NULL); 0 or -errno.  The caller settles
 * *slot with pybpf_urb_settle() on every path. */
int pybpf_urb_reserve(struct user_ring_buffer *rb, __u32 n, int timeout_ms, void **slot)
{
	void *sample = timeout_ms < 0 ? user_ring_buffer__reserve(rb, n)
				      : user_ring_buffer__reserve_blocking(rb, n, timeout_ms);
	if (!sample)
		return -errno;
	*slot = sample;
	return 0;
}

/* Submit (or discard) the reservation in *slot, if any, and clear it; a submit
 * first copies the N bytes at SRC (the reservation's private buffer, see Lent in
 * fd.c) into the sample.  1 if one was submitted, else 0. */
int pybpf_urb_settle(struct user_ring_buffer *rb, void **slot, int submit, const void *src,
		     __u32 n)
{
	void *sample = *slot;

	if (!sample)
		return 0;
	*slot = NULL;
	if (submit) {
		if (src && n)
			memcpy(sample, src, n);
		user_ring_buffer__submit(rb, sample);
	} else {
		user_ring_buffer__discard(rb, sample);
	}
	return submit ? 1 : 0;
}
