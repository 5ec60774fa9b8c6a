/* SPDX-License-Identifier: Apache-2.0 */
/* map_elem() and map_batch(): the short map syscalls of pybpf's Python code (walks,
 * batch lookups, raw Map ops), made with the GIL held, like the typed fast path
 * (pybpf/_fastpath.c), through the one bpf(2) primitive (sysbpf.h).
 *
 * Why the GIL stays held: a cffi call releases the GIL for each call and must then
 * take it back.  Beside a thread that runs Python without ever blocking (a tight
 * `m[k] = v` loop on the fast path), getting it back takes up to
 * sys.getswitchinterval() (5 ms): a walk of N keys, 2N syscalls, paid that N times
 * (the "GIL convoy").  A map lookup/update/delete/get_next_key/batch never sleeps
 * for long (batch: one chunk), so it is cheaper to keep the GIL across it: the two
 * threads then take turns by the switch interval, each making progress.
 *
 * The owner is checked with the GIL held (pybpf_fd_get), as the fast path does: close()
 * needs the GIL too, so the fd cannot be closed (and its number reused) before the
 * syscall returns.  A batch of more than BATCH_HELD entries is the exception: it lets
 * the GIL go and borrows the owner for the syscall instead.  Buffers are the caller's (bytes for what the kernel reads, writable
 * buffers for what it writes), each at least the map's key / value size: the caller
 * (pybpf/_walk.py, pybpf/maps.py) sizes them from the map. */
#include <linux/bpf.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fd.h"
#include "sysbpf.h"

/* Batches up to this many entries (the walks' default chunk) keep the GIL. */
#define BATCH_HELD 4096

/* `o` as a buffer (writable if `w`), or NULL for None; -1 with an exception set. */
static int buf_arg(PyObject *o, int w, Py_buffer *view, uint64_t *addr)
{
	view->obj = NULL;
	if (o == Py_None) {
		*addr = 0;
		return 0;
	}
	if (PyObject_GetBuffer(o, view, w ? PyBUF_WRITABLE : PyBUF_SIMPLE) < 0)
		return -1;
	*addr = (uint64_t)(uintptr_t)view->buf;
	return 0;
}

static void buf_release(Py_buffer *views, int n)
{
	for (int i = 0; i < n; i++)
		if (views[i].obj)
			PyBuffer_Release(&views[i]);
}

static int owner_arg(PyObject *o)
{
	if (!PyObject_TypeCheck(o, &FDType)) {
		PyErr_SetString(PyExc_TypeError, "owner must be a pybpf FD");
		return -1;
	}
	return pybpf_fd_get((FDObject *)o);
}

static int u64_arg(PyObject *o, uint64_t *out)
{
	unsigned long long v = PyLong_AsUnsignedLongLong(o);

	if (v == (unsigned long long)-1 && PyErr_Occurred())
		return -1;
	*out = v;
	return 0;
}

/* map_elem(owner, cmd, key, value, flags) -> 0 or -errno */
static PyObject *map_elem(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	union bpf_attr attr;
	const unsigned int size = offsetof(union bpf_attr, flags) + sizeof(attr.flags);
	Py_buffer views[2];
	uint64_t key, value, flags;
	long cmd, r;
	int fd;

	(void)self;
	if (nargs != 5) {
		PyErr_SetString(PyExc_TypeError, "map_elem(owner, cmd, key, value, flags)");
		return NULL;
	}
	cmd = PyLong_AsLong(args[1]);
	if (cmd == -1 && PyErr_Occurred())
		return NULL;
	if (cmd != BPF_MAP_LOOKUP_ELEM && cmd != BPF_MAP_UPDATE_ELEM &&
	    cmd != BPF_MAP_DELETE_ELEM && cmd != BPF_MAP_GET_NEXT_KEY &&
	    cmd != BPF_MAP_LOOKUP_AND_DELETE_ELEM) {
		PyErr_Format(PyExc_ValueError, "map_elem: command %ld is not a map element "
			     "command", cmd);
		return NULL;
	}
	if (u64_arg(args[4], &flags) < 0)
		return NULL;
	/* the kernel writes the value of lookups and the next key of GET_NEXT_KEY */
	if (buf_arg(args[2], 0, &views[0], &key) < 0)
		return NULL;
	if (buf_arg(args[3], cmd != BPF_MAP_UPDATE_ELEM, &views[1], &value) < 0) {
		buf_release(views, 1);
		return NULL;
	}
	fd = owner_arg(args[0]);
	if (fd < 0) {
		buf_release(views, 2);
		return NULL;
	}
	memset(&attr, 0, size);
	attr.map_fd = (uint32_t)fd;
	attr.key = key;
	attr.value = value;	/* next_key for GET_NEXT_KEY: the same field */
	attr.flags = flags;
	r = pybpf_bpf((int)cmd, &attr, size);
	buf_release(views, 2);
	return PyLong_FromLong(r < 0 ? r : 0);
}

/* map_batch(owner, cmd, in_batch, out_batch, keys, values, count, elem_flags, flags)
 * -> (0 or -errno, count the kernel reports) */
static PyObject *map_batch(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
	union bpf_attr attr;
	const unsigned int size = offsetof(union bpf_attr, batch.flags) + sizeof(attr.batch.flags);
	Py_buffer views[4];
	uint64_t in, out, keys, values, count, eflags, flags;
	long cmd, r;
	int fd, wr, held;

	(void)self;
	if (nargs != 9) {
		PyErr_SetString(PyExc_TypeError, "map_batch(owner, cmd, in_batch, out_batch, keys, "
				"values, count, elem_flags, flags)");
		return NULL;
	}
	cmd = PyLong_AsLong(args[1]);
	if (cmd == -1 && PyErr_Occurred())
		return NULL;
	if (cmd != BPF_MAP_LOOKUP_BATCH && cmd != BPF_MAP_LOOKUP_AND_DELETE_BATCH &&
	    cmd != BPF_MAP_UPDATE_BATCH && cmd != BPF_MAP_DELETE_BATCH) {
		PyErr_Format(PyExc_ValueError, "map_batch: command %ld is not a map batch "
			     "command", cmd);
		return NULL;
	}
	if (u64_arg(args[6], &count) < 0 || u64_arg(args[7], &eflags) < 0 ||
	    u64_arg(args[8], &flags) < 0)
		return NULL;
	if (count > UINT32_MAX) {
		PyErr_SetString(PyExc_OverflowError, "map_batch: count is a 32-bit count");
		return NULL;
	}
	wr = cmd == BPF_MAP_LOOKUP_BATCH || cmd == BPF_MAP_LOOKUP_AND_DELETE_BATCH;
	if (buf_arg(args[2], 0, &views[0], &in) < 0)
		return NULL;
	if (buf_arg(args[3], 1, &views[1], &out) < 0) {
		buf_release(views, 1);
		return NULL;
	}
	if (buf_arg(args[4], wr, &views[2], &keys) < 0) {
		buf_release(views, 2);
		return NULL;
	}
	if (buf_arg(args[5], wr, &views[3], &values) < 0) {
		buf_release(views, 3);
		return NULL;
	}
	/* A batch of more than BATCH_HELD entries may keep the kernel busy for a while:
	 * the GIL is let go for it, and the owner borrowed instead of checked. */
	held = count <= BATCH_HELD;
	if (!PyObject_TypeCheck(args[0], &FDType)) {
		PyErr_SetString(PyExc_TypeError, "owner must be a pybpf FD");
		fd = -1;
	} else {
		fd = held ? pybpf_fd_get((FDObject *)args[0]) : pybpf_fd_borrow((FDObject *)args[0]);
	}
	if (fd < 0) {
		buf_release(views, 4);
		return NULL;
	}
	memset(&attr, 0, size);
	attr.batch.in_batch = in;
	attr.batch.out_batch = out;
	attr.batch.keys = keys;
	attr.batch.values = values;
	attr.batch.count = (uint32_t)count;
	attr.batch.map_fd = (uint32_t)fd;
	attr.batch.elem_flags = eflags;
	attr.batch.flags = flags;
	if (held) {
		r = pybpf_bpf((int)cmd, &attr, size);
	} else {
		Py_BEGIN_ALLOW_THREADS
		r = pybpf_bpf((int)cmd, &attr, size);
		Py_END_ALLOW_THREADS
		pybpf_fd_release((FDObject *)args[0]);
	}
	buf_release(views, 4);
	return Py_BuildValue("(lI)", r < 0 ? r : 0L, (unsigned int)attr.batch.count);
}

static PyMethodDef sysmap_functions[] = {
	{"map_elem", (PyCFunction)(void (*)(void))map_elem, METH_FASTCALL,
	 "map_elem(owner, cmd, key, value, flags) -> 0 or -errno: one map element syscall "
	 "with the GIL held (key/value: buffers of the map's sizes, or None)."},
	{"map_batch", (PyCFunction)(void (*)(void))map_batch, METH_FASTCALL,
	 "map_batch(owner, cmd, in_batch, out_batch, keys, values, count, elem_flags, flags) "
	 "-> (0 or -errno, count): one map batch syscall, with the GIL held up to 4096 "
	 "entries (larger ones let it go, the owner borrowed)."},
	{NULL, NULL, 0, NULL},
};

int pybpf_sysmap_module_init(PyObject *m)
{
	static const struct { const char *name; long cmd; } cmds[] = {
		{"MAP_LOOKUP_ELEM", BPF_MAP_LOOKUP_ELEM},
		{"MAP_UPDATE_ELEM", BPF_MAP_UPDATE_ELEM},
		{"MAP_DELETE_ELEM", BPF_MAP_DELETE_ELEM},
		{"MAP_GET_NEXT_KEY", BPF_MAP_GET_NEXT_KEY},
		{"MAP_LOOKUP_AND_DELETE_ELEM", BPF_MAP_LOOKUP_AND_DELETE_ELEM},
		{"MAP_LOOKUP_BATCH", BPF_MAP_LOOKUP_BATCH},
		{"MAP_LOOKUP_AND_DELETE_BATCH", BPF_MAP_LOOKUP_AND_DELETE_BATCH},
		{"MAP_UPDATE_BATCH", BPF_MAP_UPDATE_BATCH},
		{"MAP_DELETE_BATCH", BPF_MAP_DELETE_BATCH},
	};

	if (PyModule_AddFunctions(m, sysmap_functions) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (PyModule_AddIntConstant(m, cmds[i].name, cmds[i].cmd) < 0)
			return -1;
	return 0;
}
