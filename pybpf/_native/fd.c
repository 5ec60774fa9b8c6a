/* SPDX-License-Identifier: Apache-2.0 */
/* FD: the one owner of a kernel object's fd (map, program, link, BTF, ring or perf
 * reader).  It closes exactly once, and never while anybody uses the number:
 *
 *   - `with owner as fd:` (borrow/release) brackets every use that may drop the
 *     GIL (a cffi call into libbpf, an epoll_wait, a walk's syscall, an mmap
 *     access).  C code that keeps the GIL from the check to the syscall's return
 *     uses pybpf_fd_get() instead: close() cannot run in between.
 *   - close() marks the owner closed at once (every later borrow, from any
 *     thread, raises pybpf.ClosedError naming the owner) and closes the fd when
 *     the last borrow is released.  A stale handle can therefore never reach an
 *     fd number that another object has since been given: the number stays ours
 *     until no call of ours is in flight.
 *   - A closer callable replaces close(2) for resources that are not a bare fd
 *     (a libbpf bpf_object, an mmap of a ring).  It runs once, at the real close,
 *     with the GIL held; what it raises is reported as unraisable, never lost.
 *
 * Every counter changes with the GIL held, so the type needs no lock; a signal
 * handler (KeyboardInterrupt) can run only between Python bytecodes, and the
 * release of a `with` block runs on every exit path. */
#include "fd.h"

#include <structmember.h>
#include <unistd.h>

static PyObject *closed_error;	/* pybpf.errors.ClosedError, imported on first use */

PyObject *pybpf_raise_closed(PyObject *what)
{
	if (!closed_error) {
		PyObject *mod = PyImport_ImportModule("pybpf.errors");

		if (!mod)
			return NULL;
		closed_error = PyObject_GetAttrString(mod, "ClosedError");
		Py_DECREF(mod);
		if (!closed_error)
			return NULL;
	}
	PyObject *e = PyObject_CallOneArg(closed_error, what ? what : Py_None);

	if (e) {
		PyErr_SetObject(closed_error, e);
		Py_DECREF(e);
	}
	return NULL;
}

/* The real close: once, when closed and nobody borrows. */
static void really_close(FDObject *o)
{
	int fd = o->fd;
	PyObject *closer = o->closer;

	o->fd = -1;
	o->closer = NULL;
	if (closer) {
		PyObject *et, *ev, *tb;

		PyErr_Fetch(&et, &ev, &tb);
		PyObject *r = fd >= 0 ? PyObject_CallFunction(closer, "i", fd)
				      : PyObject_CallNoArgs(closer);

		if (!r)
			PyErr_WriteUnraisable(closer);
		Py_XDECREF(r);
		Py_DECREF(closer);
		PyErr_Restore(et, ev, tb);
	} else if (fd >= 0) {
		close(fd);
	}
}

int pybpf_fd_get(FDObject *o)
{
	if (o->closed) {
		pybpf_raise_closed(o->what);
		return -1;
	}
	return o->fd;
}

static int FD_init(FDObject *o, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"fd", "what", "closer", NULL};
	int fd;
	PyObject *what, *closer = Py_None;

	if (o->what) {
		PyErr_SetString(PyExc_TypeError, "FD is initialised once");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kw, "iU|O:FD", kwlist, &fd, &what, &closer))
		return -1;
	if (fd < -1) {
		PyErr_Format(PyExc_ValueError, "FD: bad fd %d", fd);
		return -1;
	}
	if (closer != Py_None && !PyCallable_Check(closer)) {
		PyErr_SetString(PyExc_TypeError, "FD: closer must be callable or None");
		return -1;
	}
	o->fd = fd;
	Py_INCREF(what);
	o->what = what;
	if (closer != Py_None) {
		Py_INCREF(closer);
		o->closer = closer;
	}
	return 0;
}

static PyObject *FD_new(PyTypeObject *t, PyObject *a, PyObject *k)
{
	FDObject *o = (FDObject *)t->tp_alloc(t, 0);

	if (o)
		o->fd = -1;
	return (PyObject *)o;
}

/* borrow() -> fd: one more user in flight; ClosedError once closed. */
static PyObject *FD_borrow(FDObject *o, PyObject *unused)
{
	if (o->closed)
		return pybpf_raise_closed(o->what);
	o->borrows++;
	return PyLong_FromLong(o->fd);
}

int pybpf_fd_borrow(FDObject *o)
{
	if (o->closed) {
		pybpf_raise_closed(o->what);
		return -1;
	}
	o->borrows++;
	return o->fd;
}

void pybpf_fd_release(FDObject *o)
{
	if (--o->borrows == 0 && o->closed && (o->fd >= 0 || o->closer))
		really_close(o);
}

/* release(): that user is done; the last one after close() closes. */
static PyObject *FD_release(FDObject *o, PyObject *unused)
{
	if (o->borrows <= 0) {
		PyErr_SetString(PyExc_RuntimeError, "FD.release() without a borrow");
		return NULL;
	}
	pybpf_fd_release(o);
	Py_RETURN_NONE;
}

static PyObject *FD_exit(FDObject *o, PyObject *const *args, Py_ssize_t n)
{
	PyObject *r = FD_release(o, NULL);

	if (!r)
		return NULL;
	Py_DECREF(r);
	Py_RETURN_FALSE;
}

/* close(): refuse new borrows now; close the fd when the last borrow is released
 * (at once when none is). Idempotent. Returns True if this call closed it. */
static PyObject *FD_close(FDObject *o, PyObject *unused)
{
	if (o->closed)
		Py_RETURN_FALSE;
	o->closed = 1;
	if (o->borrows == 0)
		really_close(o);
	if (PyErr_Occurred())
		return NULL;
	Py_RETURN_TRUE;
}

/* get() -> fd, for a caller that keeps the GIL until the fd's use is over. */
static PyObject *FD_get(FDObject *o, PyObject *unused)
{
	int fd = pybpf_fd_get(o);

	return fd < 0 && PyErr_Occurred() ? NULL : PyLong_FromLong(fd);
}

/* detach() -> fd: hand the fd over (the owner is then closed without closing it). */
static PyObject *FD_detach(FDObject *o, PyObject *unused)
{
	int fd;

	if (o->closed)
		return pybpf_raise_closed(o->what);
	if (o->borrows) {
		PyErr_Format(PyExc_RuntimeError, "%U: cannot hand over an fd in use", o->what);
		return NULL;
	}
	fd = o->fd;
	o->fd = -1;
	o->closed = 1;
	Py_CLEAR(o->closer);
	return PyLong_FromLong(fd);
}

static PyObject *FD_get_closed(FDObject *o, void *c)
{
	return PyBool_FromLong(o->closed);
}

static PyObject *FD_get_borrows(FDObject *o, void *c)
{
	return PyLong_FromSsize_t(o->borrows);
}

static PyObject *FD_repr(FDObject *o)
{
	if (o->closed)
		return PyUnicode_FromFormat("<FD %U closed%s>", o->what,
					    o->fd >= 0 || o->closer ? " (in use)" : "");
	return PyUnicode_FromFormat("<FD %U fd=%d>", o->what, o->fd);
}

static int FD_traverse(FDObject *o, visitproc visit, void *arg)
{
	Py_VISIT(o->closer);
	return 0;
}

static int FD_clear(FDObject *o)
{
	Py_CLEAR(o->closer);
	return 0;
}

/* An owner that dies unclosed (or with a borrow that was never released) closes
 * here: tp_finalize (PEP 442) runs before the garbage collector clears anything in
 * a cycle, so the closer still sees whole objects (a partial's function, an mmap). */
static void FD_finalize(FDObject *o)
{
	if (o->fd >= 0 || o->closer) {
		o->closed = 1;
		really_close(o);
	}
}

static void FD_dealloc(FDObject *o)
{
	if (PyObject_CallFinalizerFromDealloc((PyObject *)o) < 0)
		return;	/* resurrected by the closer */
	PyObject_GC_UnTrack(o);
	if (o->weakreflist)
		PyObject_ClearWeakRefs((PyObject *)o);
	if (o->fd >= 0)
		close(o->fd);	/* the closer was cleared by the GC: the fd at least */
	Py_CLEAR(o->closer);
	Py_CLEAR(o->what);
	Py_TYPE(o)->tp_free((PyObject *)o);
}

static PyMethodDef FD_methods[] = {
	{"borrow", (PyCFunction)FD_borrow, METH_NOARGS,
	 "borrow() -> fd: one more user in flight (ClosedError once closed); pair with release()."},
	{"release", (PyCFunction)FD_release, METH_NOARGS,
	 "release(): end a borrow; the last one after close() does the real close."},
	{"__enter__", (PyCFunction)FD_borrow, METH_NOARGS, "borrow()"},
	{"__exit__", (PyCFunction)(void (*)(void))FD_exit, METH_FASTCALL, "release()"},
	{"close", (PyCFunction)FD_close, METH_NOARGS,
	 "close(): no new borrows from now on; the fd closes when the last borrow ends. "
	 "Idempotent; True if this call closed the owner."},
	{"get", (PyCFunction)FD_get, METH_NOARGS,
	 "get() -> fd without a borrow: only for a caller that holds the GIL until the fd's "
	 "use is over (ClosedError once closed)."},
	{"detach", (PyCFunction)FD_detach, METH_NOARGS,
	 "detach() -> fd: give up ownership without closing (the caller closes it)."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef FD_getset[] = {
	{"closed", (getter)FD_get_closed, NULL, "close() was called.", NULL},
	{"borrows", (getter)FD_get_borrows, NULL, "Users in flight.", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef FD_members[] = {
	{"what", T_OBJECT, offsetof(FDObject, what), READONLY, "What the fd is, for messages."},
	{NULL, 0, 0, 0, NULL},
};

PyTypeObject FDType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "pybpf._fastpath.FD",
	.tp_doc = "FD(fd, what, closer=None): the one owner of a kernel fd (see pybpf/_fd.py).",
	.tp_basicsize = sizeof(FDObject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = FD_new,
	.tp_init = (initproc)FD_init,
	.tp_dealloc = (destructor)FD_dealloc,
	.tp_finalize = (destructor)FD_finalize,
	.tp_traverse = (traverseproc)FD_traverse,
	.tp_clear = (inquiry)FD_clear,
	.tp_repr = (reprfunc)FD_repr,
	.tp_methods = FD_methods,
	.tp_getset = FD_getset,
	.tp_members = FD_members,
	.tp_weaklistoffset = offsetof(FDObject, weakreflist),
};

/* --- Lent: writable memory lent to the user until its owner closes it -------------
 *
 * What `with urb.reserve(n) as buf:` yields.  The bytes live in a private buffer
 * (never in the ring: the reservation copies them into its ring sample when it is
 * submitted), so no view of it, made at any time, can point into a ring that the
 * kernel consumes or that close() unmaps.  After close() every use of the object
 * and of its slices (buf[a:b] is another Lent over the same bytes) raises
 * pybpf.ClosedError naming the owner; a memoryview taken while it was open keeps
 * the private bytes alive and harmless. */
typedef struct LentObject {
	PyObject_HEAD
	struct LentObject *root;	/* a slice: the Lent whose bytes it views (a reference) */
	char *data;			/* root: its own malloc()ed bytes; slice: into root's */
	Py_ssize_t len;
	int closed;			/* root only */
	PyObject *what;			/* root only: named by ClosedError */
} LentObject;

static PyTypeObject LentType;

static LentObject *lent_root(LentObject *o)
{
	return o->root ? o->root : o;
}

static int lent_check(LentObject *o)
{
	LentObject *r = lent_root(o);

	if (r->closed) {
		pybpf_raise_closed(r->what);
		return -1;
	}
	return 0;
}

static PyObject *Lent_new(PyTypeObject *t, PyObject *args, PyObject *kw)
{
	static char *kwlist[] = {"size", "what", NULL};
	Py_ssize_t size;
	PyObject *what;
	LentObject *o;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "nU:Lent", kwlist, &size, &what))
		return NULL;
	if (size < 0) {
		PyErr_SetString(PyExc_ValueError, "Lent: size must be >= 0");
		return NULL;
	}
	o = (LentObject *)t->tp_alloc(t, 0);
	if (!o)
		return NULL;
	o->data = PyMem_Calloc(size ? (size_t)size : 1, 1);
	if (!o->data) {
		Py_DECREF(o);
		return PyErr_NoMemory();
	}
	o->len = size;
	Py_INCREF(what);
	o->what = what;
	return (PyObject *)o;
}

static void Lent_dealloc(LentObject *o)
{
	if (o->root)
		Py_DECREF(o->root);
	else
		PyMem_Free(o->data);
	Py_XDECREF(o->what);
	Py_TYPE(o)->tp_free((PyObject *)o);
}

static int Lent_getbuffer(LentObject *o, Py_buffer *view, int flags)
{
	if (lent_check(o) < 0) {
		view->obj = NULL;
		return -1;
	}
	return PyBuffer_FillInfo(view, (PyObject *)o, o->data, o->len, 0, flags);
}

static Py_ssize_t Lent_length(LentObject *o)
{
	return lent_check(o) < 0 ? -1 : o->len;
}

static PyObject *Lent_item(LentObject *o, Py_ssize_t i)
{
	if (lent_check(o) < 0)
		return NULL;
	if (i < 0 || i >= o->len) {
		PyErr_SetString(PyExc_IndexError, "index out of range");
		return NULL;
	}
	return PyLong_FromLong((unsigned char)o->data[i]);
}

static PyObject *Lent_subscript(LentObject *o, PyObject *key)
{
	Py_ssize_t start, stop, step, n;
	LentObject *s, *r;

	if (lent_check(o) < 0)
		return NULL;
	if (PyIndex_Check(key)) {
		Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);

		if (i == -1 && PyErr_Occurred())
			return NULL;
		return Lent_item(o, i < 0 ? i + o->len : i);
	}
	if (!PySlice_Check(key)) {
		PyErr_Format(PyExc_TypeError, "indices must be integers or slices, not %.100s",
			     Py_TYPE(key)->tp_name);
		return NULL;
	}
	if (PySlice_Unpack(key, &start, &stop, &step) < 0)
		return NULL;
	n = PySlice_AdjustIndices(o->len, &start, &stop, step);
	if (step != 1) {
		PyErr_SetString(PyExc_ValueError, "a reservation slice must have step 1");
		return NULL;
	}
	s = PyObject_New(LentObject, &LentType);
	if (!s)
		return NULL;
	r = lent_root(o);
	Py_INCREF(r);
	s->root = r;
	s->data = o->data + start;
	s->len = n;
	s->closed = 0;
	s->what = NULL;
	return (PyObject *)s;
}

static int Lent_ass_subscript(LentObject *o, PyObject *key, PyObject *value)
{
	Py_ssize_t start, stop, step, n;
	Py_buffer src;

	if (lent_check(o) < 0)
		return -1;
	if (!value) {
		PyErr_SetString(PyExc_TypeError, "cannot delete from a reservation");
		return -1;
	}
	if (PyIndex_Check(key)) {
		Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
		long v;

		if (i == -1 && PyErr_Occurred())
			return -1;
		if (i < 0)
			i += o->len;
		if (i < 0 || i >= o->len) {
			PyErr_SetString(PyExc_IndexError, "index out of range");
			return -1;
		}
		v = PyLong_AsLong(value);
		if (v == -1 && PyErr_Occurred())
			return -1;
		if (v < 0 || v > 255) {
			PyErr_SetString(PyExc_ValueError, "byte must be in range(0, 256)");
			return -1;
		}
		o->data[i] = (char)v;
		return 0;
	}
	if (!PySlice_Check(key)) {
		PyErr_SetString(PyExc_TypeError, "indices must be integers or slices");
		return -1;
	}
	if (PySlice_Unpack(key, &start, &stop, &step) < 0)
		return -1;
	n = PySlice_AdjustIndices(o->len, &start, &stop, step);
	if (step != 1) {
		PyErr_SetString(PyExc_ValueError, "a reservation slice must have step 1");
		return -1;
	}
	if (PyObject_GetBuffer(value, &src, PyBUF_SIMPLE) < 0)
		return -1;
	if (src.len != n) {
		PyErr_Format(PyExc_ValueError, "cannot write %zd bytes into a %zd-byte slice",
			     src.len, n);
		PyBuffer_Release(&src);
		return -1;
	}
	memmove(o->data + start, src.buf, (size_t)n);
	PyBuffer_Release(&src);
	return 0;
}

/* tobytes() -> bytes: a copy (ClosedError once closed). */
static PyObject *Lent_tobytes(LentObject *o, PyObject *unused)
{
	if (lent_check(o) < 0)
		return NULL;
	return PyBytes_FromStringAndSize(o->data, o->len);
}

/* close(): every later use raises ClosedError (the bytes stay while viewed). */
static PyObject *Lent_close(LentObject *o, PyObject *unused)
{
	lent_root(o)->closed = 1;
	Py_RETURN_NONE;
}

static PyObject *Lent_get_closed(LentObject *o, void *unused)
{
	return PyBool_FromLong(lent_root(o)->closed);
}

static PyObject *Lent_repr(LentObject *o)
{
	LentObject *r = lent_root(o);

	return PyUnicode_FromFormat("<pybpf reservation of %zd bytes of %S%s>", o->len,
				    r->what ? r->what : Py_None, r->closed ? ", closed" : "");
}

static PyMethodDef Lent_methods[] = {
	{"tobytes", (PyCFunction)Lent_tobytes, METH_NOARGS, "A copy of the bytes."},
	{"close", (PyCFunction)Lent_close, METH_NOARGS,
	 "Every later use (of slices too) raises ClosedError."},
	{NULL, NULL, 0, NULL},
};

static PyGetSetDef Lent_getset[] = {
	{"closed", (getter)Lent_get_closed, NULL, "close() was called.", NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Lent_as_sequence = {
	.sq_length = (lenfunc)Lent_length,
	.sq_item = (ssizeargfunc)Lent_item,
};

static PyMappingMethods Lent_as_mapping = {
	.mp_length = (lenfunc)Lent_length,
	.mp_subscript = (binaryfunc)Lent_subscript,
	.mp_ass_subscript = (objobjargproc)Lent_ass_subscript,
};

static PyBufferProcs Lent_as_buffer = {
	.bf_getbuffer = (getbufferproc)Lent_getbuffer,
};

static PyTypeObject LentType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "pybpf._fastpath.Lent",
	.tp_doc = "Lent(size, what): writable bytes lent until close() (see fd.c).",
	.tp_basicsize = sizeof(LentObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_new = Lent_new,
	.tp_dealloc = (destructor)Lent_dealloc,
	.tp_repr = (reprfunc)Lent_repr,
	.tp_methods = Lent_methods,
	.tp_getset = Lent_getset,
	.tp_as_sequence = &Lent_as_sequence,
	.tp_as_mapping = &Lent_as_mapping,
	.tp_as_buffer = &Lent_as_buffer,
};

int pybpf_fd_module_init(PyObject *m)
{
	if (PyType_Ready(&FDType) < 0)
		return -1;
	Py_INCREF(&FDType);
	if (PyModule_AddObject(m, "FD", (PyObject *)&FDType) < 0) {
		Py_DECREF(&FDType);
		return -1;
	}
	if (PyType_Ready(&LentType) < 0)
		return -1;
	Py_INCREF(&LentType);
	if (PyModule_AddObject(m, "Lent", (PyObject *)&LentType) < 0) {
		Py_DECREF(&LentType);
		return -1;
	}
	return 0;
}
