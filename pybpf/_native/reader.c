/* SPDX-License-Identifier: Apache-2.0 */
/* What the ring and perf readers (ring.c, perf.c) share: one lock, the closed
 * state, and the wait.
 *
 * Every access to a reader's mapped pages (positions, records) happens in a C
 * call that holds the reader's lock and first checks that it is not closed;
 * close takes the same lock, so it never unmaps pages a consumer is reading,
 * from whatever thread it comes.  The wait is the one call that sleeps without
 * the lock: it counts itself in WAITERS, and the epoll and wake fds are closed
 * by whoever is last (close, or the last waiter to leave), so a closed fd number
 * is never waited on.  Close writes the wake eventfd: every waiter returns.
 *
 * These are C calls made through cffi (the GIL is released): a Python signal
 * handler never runs in the middle of one, so a KeyboardInterrupt can only land
 * between calls, with the reader in a consistent state.  The struct itself is
 * freed by the Python object's finalizer, when no thread can be inside a call. */

#define PYBPF_CLOSED (-EBADF)	/* returned by every call once the reader is closed */

struct pybpf_core {
	pthread_mutex_t lock;
	int closed;
	int waiters;	/* threads in pybpf_core_wait() (or holding the epoll fd for asyncio) */
	int epfd;	/* epoll over the event source(s) and WAKEFD */
	int wakefd;	/* eventfd, written once by close */
};

#define PYBPF_WAKE_TAG 0xffffffffU

static int pybpf_core_init(struct pybpf_core *c)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = PYBPF_WAKE_TAG };

	pthread_mutex_init(&c->lock, NULL);
	c->closed = 0;
	c->waiters = 0;
	c->wakefd = -1;
	c->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (c->epfd < 0)
		return -errno;
	c->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->wakefd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->wakefd, &ev) < 0) {
		int err = -errno;

		if (c->wakefd >= 0)
			close(c->wakefd);
		close(c->epfd);
		c->epfd = c->wakefd = -1;
		return err;
	}
	return 0;
}

/* With the lock held: close the epoll and wake fds if nobody waits on them. */
static void pybpf_core_release_fds(struct pybpf_core *c)
{
	if (c->closed && c->waiters == 0 && c->epfd >= 0) {
		close(c->epfd);
		close(c->wakefd);
		c->epfd = c->wakefd = -1;
	}
}

/* With the lock held: mark closed and wake every waiter.  Returns 1 the first
 * time (the caller then frees its mapped pages, still under the lock). */
static int pybpf_core_shut(struct pybpf_core *c)
{
	__u64 one = 1;

	if (c->closed)
		return 0;
	c->closed = 1;
	if (c->wakefd >= 0 && write(c->wakefd, &one, sizeof(one)) < 0) {
		/* an eventfd write of 1 cannot fail short of overflow; nothing to do */
	}
	pybpf_core_release_fds(c);
	return 1;
}

/* Register FD in the reader's epoll (level-triggered), tagged TAG. */
static int pybpf_core_watch(struct pybpf_core *c, int fd, __u32 tag)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };

	return epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

/* Wait up to TIMEOUT_MS (-1: forever) for the epoll, unless AVAIL(CTX) (called
 * with the lock held) says records are there already.  Returns 1 (records may be
 * there), 0 (timeout), -EINTR (a signal: Python runs its handlers, then calls
 * again) or PYBPF_CLOSED. */
static long pybpf_core_wait(struct pybpf_core *c, int timeout_ms, int (*avail)(void *),
			    void *ctx)
{
	struct epoll_event evs[8];
	int n, err = 0, epfd;
	long ret;

	pthread_mutex_lock(&c->lock);
	if (c->closed) {
		pthread_mutex_unlock(&c->lock);
		return PYBPF_CLOSED;
	}
	if (avail(ctx) || timeout_ms == 0) {
		ret = timeout_ms == 0 ? avail(ctx) : 1;
		pthread_mutex_unlock(&c->lock);
		return ret;
	}
	c->waiters++;
	epfd = c->epfd;
	pthread_mutex_unlock(&c->lock);

	n = epoll_wait(epfd, evs, 8, timeout_ms);
	if (n < 0)
		err = -errno;

	pthread_mutex_lock(&c->lock);
	c->waiters--;
	if (c->closed) {
		pybpf_core_release_fds(c);
		ret = PYBPF_CLOSED;
	} else if (err) {
		ret = err;
	} else {
		ret = n > 0;
	}
	pthread_mutex_unlock(&c->lock);
	return ret;
}

/* asyncio: keep the epoll fd open while an event loop watches it (as a waiter).
 * Returns the fd, or PYBPF_CLOSED. */
static int pybpf_core_hold(struct pybpf_core *c)
{
	int fd;

	pthread_mutex_lock(&c->lock);
	if (c->closed) {
		fd = PYBPF_CLOSED;
	} else {
		c->waiters++;
		fd = c->epfd;
	}
	pthread_mutex_unlock(&c->lock);
	return fd;
}

static void pybpf_core_unhold(struct pybpf_core *c)
{
	pthread_mutex_lock(&c->lock);
	if (c->waiters > 0)
		c->waiters--;
	pybpf_core_release_fds(c);
	pthread_mutex_unlock(&c->lock);
}

/* The epoll fd for select()/selectors users (valid until close), or PYBPF_CLOSED. */
static int pybpf_core_fileno(struct pybpf_core *c)
{
	int fd;

	pthread_mutex_lock(&c->lock);
	fd = c->closed ? PYBPF_CLOSED : c->epfd;
	pthread_mutex_unlock(&c->lock);
	return fd;
}

/* The count of waiters must be back to zero before the struct goes. */
static void pybpf_core_destroy(struct pybpf_core *c)
{
	pthread_mutex_lock(&c->lock);
	c->waiters = 0;
	c->closed = 1;
	pybpf_core_release_fds(c);
	pthread_mutex_unlock(&c->lock);
	pthread_mutex_destroy(&c->lock);
}

/* A read-only mapping of LEN bytes of FD at OFFSET, for Python views that must
 * outlive the reader (borrow()): unmapped by pybpf_unmap() when the last view
 * is gone. */
void pybpf_unmap(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}
