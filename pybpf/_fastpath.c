/* SPDX-License-Identifier: Apache-2.0 */
/* pybpf._fastpath: the hot paths of typed values, in C -- MapOps, the single-key
 * operations of typed maps (m[k], m[k] = v, del m[k], get, in), MapBase, the base of
 * TypedMap whose mapping slots call MapOps with no Python frame, and Decoder, BTF
 * layouts of scalars decoded from any buffer.  Struct values themselves (their
 * construction and ==) are in _native/values.c, in the same module.
 *
 * One MapOps per loaded TypedMap.  Each call is one bpf(2) syscall, made with the
 * GIL held: a map syscall never sleeps for long, and dropping and retaking the GIL
 * costs more than the whole call.  Keys and values go straight between the kernel's
 * bytes and Python objects by their layout (struct layout: scalars at offsets):
 * ints, floats, bools, enum members, or the map's generated struct class with its
 * __slots__ filled in place; a struct is taken as its class, a tuple/list of its
 * fields in order or a dict by attribute name (missing fields zero).  Per-CPU maps
 * hold one value per possible CPU, each 8-byte aligned: a list on lookup; a list or
 * one value for every CPU on update.  Layouts the C side does not know (char arrays,
 * nested structs, unions...) use the codec's Python decoder and encoder, called
 * from here.
 *
 * Decoder does the same conversion for any buffer (struct codecs of scalars use it:
 * event records, batches, globals).
 *
 * Whatever the fast path cannot take (a key of another type, a value out of range,
 * an enum by name...) raises Fallback, before any syscall: the Python path then
 * validates and says what was wrong.  ENOENT raises KeyError(key) (get(): the
 * default; m[k] and del m[k] raise what the map's _missing(key) makes); other errors
 * raise OSError(errno) for Python to name the map. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <float.h>
#include <limits.h>
#include <linux/bpf.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "_native/fd.h"
#include "_native/sysbpf.h"
#include "_native/values.h"

/* map_elem()/map_batch(): pybpf/_native/sysmap.c */
int pybpf_sysmap_module_init(PyObject *m);

static PyObject *Fallback;
static PyTypeObject MapOpsType;

/* one scalar of the value: where it is and what it is */
struct field {
	char code;		/* struct module code: B H I Q b h i q ? f d */
	Py_ssize_t off;		/* byte offset in the value */
	Py_ssize_t slot;	/* offset of its __slots__ member in the instance; -1: the
				 * value is this scalar itself */
	PyObject *members;	/* enums: dict value -> member (borrowed from the tuple) */
	PyObject *name;		/* its attribute name (borrowed from the slot descriptor),
				 * for dict values; NULL for a scalar value */
};

/* A value C converts itself: a struct class whose __slots__ the fields fill, or one
 * scalar (cls NULL, one field with slot -1). */
struct layout {
	PyTypeObject *cls;
	PyObject *spec;		/* the field tuple given (keeps enum dicts alive) */
	Py_ssize_t nfields;	/* 0: no layout */
	struct field *fields;
};

typedef struct {
	PyObject_HEAD
	FDObject *owner;	/* the map's fd owner: checked (GIL held) before each syscall */
	Py_ssize_t key_size;
	Py_ssize_t value_size;	/* one value (per-CPU maps: one CPU's) */
	Py_ssize_t ncpu;	/* per-CPU maps: values per key (possible CPUs); 0: one */
	Py_ssize_t stride;	/* per-CPU maps: bytes between two CPUs' values (8-aligned) */
	Py_ssize_t value_total;	/* bytes of a whole map value: ncpu * stride, or value_size */
	int key_int;		/* 4 or 8: unsigned int keys by value; 0: bytes/kenc */
	PyObject *kenc;		/* key -> bytes (raises on bad keys), or NULL */
	struct layout lay;	/* the value, when C converts it (nfields > 0) */
	struct layout klay;	/* the key, when C converts a struct key (nfields > 0) */
	PyObject *vdec;		/* (bytes, 0) -> value when lay.nfields == 0 */
	PyObject *venc;		/* value -> bytes when lay.nfields == 0 */
	int ready;
} MapOps;

/* Struct keys C converts itself are at most this big (on the stack). */
#define KEY_STACK 64

/* layout_encode()/scalar_to(): an exception is raised and must reach the caller */
#define NOT_SWALLOWED (-2)

static int layout_encode(const struct layout *l, PyObject *value, char *p, Py_ssize_t size);

/* Each call works in its own value buffer (decoding may run Python code, e.g. a
 * finalizer during a GC, that uses the same map): on the stack when small. */
#define STACK_VALUE 512

static char *value_buf(MapOps *s, char *stack)
{
	char *p;

	if (s->value_total <= STACK_VALUE)
		return stack;
	p = PyMem_Malloc((size_t)s->value_total);
	if (!p)
		PyErr_NoMemory();
	return p;
}

static void value_buf_free(char *p, char *stack)
{
	if (p != stack)
		PyMem_Free(p);
}

static int elem_op(MapOps *s, int cmd, const void *key, void *value, uint64_t flags)
{
	union bpf_attr attr;
	int fd = pybpf_fd_get(s->owner);
	long r;

	if (fd < 0)
		return -1;	/* ClosedError is set */
	memset(&attr, 0, offsetof(union bpf_attr, flags) + sizeof(attr.flags));
	attr.map_fd = (uint32_t)fd;
	attr.key = (uint64_t)(uintptr_t)key;
	attr.value = (uint64_t)(uintptr_t)value;
	attr.flags = flags;
	r = pybpf_bpf(cmd, &attr, offsetof(union bpf_attr, flags) + sizeof(attr.flags));
	return r < 0 ? (int)-r : 0;
}

/* After a Python encoder raised: an Exception means "not for the fast path" (cleared,
 * 1); anything else (KeyboardInterrupt, MemoryError...) stays raised (0). */
static int swallow(void)
{
	if (!PyErr_ExceptionMatches(PyExc_Exception) || PyErr_ExceptionMatches(PyExc_MemoryError))
		return 0;
	PyErr_Clear();
	return 1;
}

static void raise_key_error(PyObject *key)
{
	PyObject *e = PyObject_CallOneArg(PyExc_KeyError, key);

	if (e) {
		PyErr_SetObject(PyExc_KeyError, e);
		Py_DECREF(e);
	}
}

/* err < 0: the map's owner was closed (ClosedError is already set). */
static PyObject *raise_errno(int err)
{
	if (err < 0)
		return NULL;
	errno = err;
	return PyErr_SetFromErrno(PyExc_OSError);
}

/* The key's bytes: *KP points into KBUF, into *HOLD (a bytes object to release),
 * or into KEY itself.  -1 with Fallback set when the fast path cannot take it. */
static int key_bytes(MapOps *s, PyObject *key, uint64_t *kbuf, const void **kp, PyObject **hold)
{
	*hold = NULL;
	if (s->key_int) {
		unsigned long long v;

		if (!PyLong_Check(key))
			goto fail;
		v = PyLong_AsUnsignedLongLong(key);
		if (v == (unsigned long long)-1 && PyErr_Occurred()) {
			PyErr_Clear();
			goto fail;
		}
		if (s->key_int == 4) {
			uint32_t k = (uint32_t)v;

			if (v > UINT32_MAX)
				goto fail;
			memcpy(kbuf, &k, 4);
		} else {
			*kbuf = v;
		}
		*kp = kbuf;
		return 0;
	}
	if (s->klay.nfields) {
		int r = layout_encode(&s->klay, key, (char *)kbuf, s->key_size);

		if (r == 0) {
			*kp = kbuf;	/* a struct key (instance, tuple or dict), written in C */
			return 0;
		}
		if (r == NOT_SWALLOWED)
			return -1;
	}
	if (!s->kenc) {
		if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != s->key_size)
			goto fail;
		*kp = PyBytes_AS_STRING(key);
		return 0;
	}
	{
		PyObject *b = PyObject_CallOneArg(s->kenc, key);

		if (!b) {
			if (swallow())
				goto fail;
			return -1;
		}
		if (!PyBytes_CheckExact(b) || PyBytes_GET_SIZE(b) != s->key_size) {
			Py_DECREF(b);
			goto fail;
		}
		*hold = b;
		*kp = PyBytes_AS_STRING(b);
		return 0;
	}
fail:
	PyErr_SetNone(Fallback);
	return -1;
}

/* Unsigned values that fit a long go through PyLong_FromLong: CPython builds small
 * ones there without counting digits (the unsigned constructors count them). */
static PyObject *ulong_from(uint64_t v)
{
	return v <= LONG_MAX ? PyLong_FromLong((long)v) : PyLong_FromUnsignedLongLong(v);
}

static PyObject *scalar_from(const struct field *f, const char *p)
{
	switch (f->code) {
	case 'B': return PyLong_FromLong(*(const uint8_t *)p);
	case 'b': return PyLong_FromLong(*(const int8_t *)p);
	case '?': return PyBool_FromLong(*p != 0);
	case 'H': { uint16_t v; memcpy(&v, p, 2); return PyLong_FromLong(v); }
	case 'h': { int16_t v; memcpy(&v, p, 2); return PyLong_FromLong(v); }
	case 'I': { uint32_t v; memcpy(&v, p, 4); return ulong_from(v); }
	case 'i': { int32_t v; memcpy(&v, p, 4); return PyLong_FromLong(v); }
	case 'Q': { uint64_t v; memcpy(&v, p, 8); return ulong_from(v); }
	case 'q': { int64_t v; memcpy(&v, p, 8); return PyLong_FromLongLong(v); }
	case 'f': { float v; memcpy(&v, p, 4); return PyFloat_FromDouble(v); }
	case 'd': { double v; memcpy(&v, p, 8); return PyFloat_FromDouble(v); }
	}
	PyErr_Format(PyExc_SystemError, "pybpf._fastpath: bad field code %c", f->code);
	return NULL;
}

static PyObject *field_from(const struct field *f, const char *value)
{
	PyObject *v = scalar_from(f, value + f->off);

	if (v && f->members) {	/* enum: its member when the value names one */
		PyObject *m = PyDict_GetItemWithError(f->members, v);

		if (m) {
			Py_INCREF(m);
			Py_SETREF(v, m);
		} else if (PyErr_Occurred()) {
			Py_CLEAR(v);
		}
	}
	return v;
}

/* The value at P as a Python object (L->nfields > 0). */
static PyObject *layout_decode(const struct layout *l, const char *p)
{
	PyObject *o;
	Py_ssize_t i;

	if (!l->cls)
		return field_from(&l->fields[0], p);
	o = l->cls->tp_alloc(l->cls, 0);
	if (!o)
		return NULL;
	for (i = 0; i < l->nfields; i++) {
		const struct field *f = &l->fields[i];
		PyObject *v = field_from(f, p);

		if (!v) {
			Py_DECREF(o);
			return NULL;
		}
		*(PyObject **)((char *)o + f->slot) = v;  /* a fresh instance: slots are NULL */
	}
	return o;
}

/* One value (one CPU's for per-CPU maps) at OFF in VBUF; WHOLE holds the whole value
 * as bytes for the Python decoder (made on first need). */
static PyObject *decode_one(MapOps *s, const char *vbuf, Py_ssize_t off, PyObject **whole)
{
	PyObject *o;
	PyObject *v;

	if (s->lay.nfields)
		return layout_decode(&s->lay, vbuf + off);
	if (!*whole) {
		*whole = PyBytes_FromStringAndSize(vbuf, s->value_total);
		if (!*whole)
			return NULL;
	}
	o = PyLong_FromSsize_t(off);
	v = o ? PyObject_CallFunctionObjArgs(s->vdec, *whole, o, NULL) : NULL;
	Py_XDECREF(o);
	return v;
}

/* The value in VBUF as a Python object: per-CPU maps, a list with one per CPU. */
static PyObject *decode_value(MapOps *s, const char *vbuf)
{
	PyObject *whole = NULL, *out;
	Py_ssize_t i;

	if (!s->ncpu) {
		out = decode_one(s, vbuf, 0, &whole);
		Py_XDECREF(whole);
		return out;
	}
	out = PyList_New(s->ncpu);
	if (!out)
		return NULL;
	for (i = 0; i < s->ncpu; i++) {
		PyObject *v = decode_one(s, vbuf, i * s->stride, &whole);

		if (!v) {
			Py_CLEAR(out);
			break;
		}
		PyList_SET_ITEM(out, i, v);
	}
	Py_XDECREF(whole);
	return out;
}

/* Write one scalar; -1 (no exception set) when the fast path cannot take V;
 * NOT_SWALLOWED when V's own conversion (an int subclass's __bool__, __float__) raised
 * what must not be swallowed (KeyboardInterrupt from a signal, MemoryError): it stays
 * raised. */
static int scalar_to(const struct field *f, PyObject *v, char *p)
{
	if (f->code == 'f' || f->code == 'd') {
		double d;

		if (!PyFloat_Check(v) && !PyLong_Check(v))
			return -1;
		d = PyFloat_AsDouble(v);
		if (d == -1.0 && PyErr_Occurred())
			return swallow() ? -1 : NOT_SWALLOWED;
		if (f->code == 'd') {
			memcpy(p, &d, 8);
		} else {
			float x = (float)d;

			if ((d > FLT_MAX || d < -FLT_MAX) && d == d && d - d == 0)
				return -1;	/* finite, out of range: struct raises */
			memcpy(p, &x, 4);
		}
		return 0;
	}
	if (!PyLong_Check(v))
		return -1;
	if (f->code == '?') {
		int t = PyObject_IsTrue(v);

		if (t < 0)
			return swallow() ? -1 : NOT_SWALLOWED;
		*p = (char)t;
		return 0;
	}
	if (f->code == 'B' || f->code == 'H' || f->code == 'I' || f->code == 'Q') {
		unsigned long long u = PyLong_AsUnsignedLongLong(v);

		if (u == (unsigned long long)-1 && PyErr_Occurred())
			return swallow() ? -1 : NOT_SWALLOWED;
		switch (f->code) {
		case 'B': if (u > UINT8_MAX) return -1; *(uint8_t *)p = (uint8_t)u; break;
		case 'H': { uint16_t x = (uint16_t)u; if (u > UINT16_MAX) return -1; memcpy(p, &x, 2); break; }
		case 'I': { uint32_t x = (uint32_t)u; if (u > UINT32_MAX) return -1; memcpy(p, &x, 4); break; }
		default: memcpy(p, &u, 8);
		}
		return 0;
	} else {
		long long q = PyLong_AsLongLong(v);

		if (q == -1 && PyErr_Occurred())
			return swallow() ? -1 : NOT_SWALLOWED;
		switch (f->code) {
		case 'b': if (q < INT8_MIN || q > INT8_MAX) return -1; *(int8_t *)p = (int8_t)q; break;
		case 'h': { int16_t x = (int16_t)q; if (q < INT16_MIN || q > INT16_MAX) return -1; memcpy(p, &x, 2); break; }
		case 'i': { int32_t x = (int32_t)q; if (q < INT32_MIN || q > INT32_MAX) return -1; memcpy(p, &x, 4); break; }
		default: memcpy(p, &q, 8);
		}
		return 0;
	}
}

/* Write VALUE into P (SIZE bytes, zeroed first) by layout L: an instance of L's class,
 * a tuple or list of the fields in order (missing ones zero), a dict by attribute
 * name (missing ones zero), or for a scalar layout the scalar.  0: written; -1: not a
 * value this layout takes as it is (no exception set: the caller falls back);
 * NOT_SWALLOWED: an exception to hand on (see scalar_to). */
static int layout_encode(const struct layout *l, PyObject *value, char *p, Py_ssize_t size)
{
	Py_ssize_t i, n;

	memset(p, 0, (size_t)size);
	if (!l->cls)
		return scalar_to(&l->fields[0], value, p);
	if (Py_TYPE(value) == l->cls) {
		for (i = 0; i < l->nfields; i++) {
			const struct field *f = &l->fields[i];
			PyObject *v = *(PyObject **)((char *)value + f->slot);
			int r;

			if (!v)
				return -1;
			Py_INCREF(v);	/* a field's __bool__/__float__ may assign the slot meanwhile */
			r = scalar_to(f, v, p + f->off);
			Py_DECREF(v);
			if (r < 0)
				return r;
		}
		return 0;
	}
	if (PyTuple_CheckExact(value) || PyList_CheckExact(value)) {
		n = PySequence_Fast_GET_SIZE(value);
		if (n > l->nfields)
			return -1;
		for (i = 0; i < n; i++) {
			const struct field *f = &l->fields[i];
			PyObject *v;
			int r;

			/* an item's __bool__/__float__ may change a list meanwhile */
			if (i >= PySequence_Fast_GET_SIZE(value))
				return -1;
			v = PySequence_Fast_GET_ITEM(value, i);
			Py_INCREF(v);
			r = scalar_to(f, v, p + f->off);
			Py_DECREF(v);
			if (r < 0)
				return r;
		}
		return 0;
	}
	if (PyDict_CheckExact(value)) {
		Py_ssize_t found = 0;

		for (i = 0; i < l->nfields; i++) {
			const struct field *f = &l->fields[i];
			PyObject *v = PyDict_GetItemWithError(value, f->name);
			int r;

			if (!v) {
				if (PyErr_Occurred())
					return swallow() ? -1 : NOT_SWALLOWED;
				continue;
			}
			found++;
			Py_INCREF(v);
			r = scalar_to(f, v, p + f->off);
			Py_DECREF(v);
			if (r < 0)
				return r;
		}
		/* a key that is no attribute name (a C name, a typo): Python explains */
		return found == PyDict_GET_SIZE(value) ? 0 : -1;
	}
	return -1;
}

/* Write one value (one CPU's for per-CPU maps) into P: by the layout, else by the
 * codec's unchecked encoder.  -1 with Fallback (or a real error) set. */
static int encode_one(MapOps *s, PyObject *value, char *p)
{
	PyObject *b;

	if (s->lay.nfields) {
		int r = layout_encode(&s->lay, value, p, s->value_size);

		if (r == 0)
			return 0;
		if (r == NOT_SWALLOWED)
			return -1;
	}
	if (!s->venc)
		goto fail;
	b = PyObject_CallOneArg(s->venc, value);
	if (!b) {
		if (swallow())
			goto fail;
		return -1;
	}
	if (!PyBytes_CheckExact(b) || PyBytes_GET_SIZE(b) != s->value_size) {
		Py_DECREF(b);
		goto fail;
	}
	memcpy(p, PyBytes_AS_STRING(b), (size_t)s->value_size);
	Py_DECREF(b);
	return 0;
fail:
	PyErr_SetNone(Fallback);
	return -1;
}

/* The whole value's bytes in VBUF (value_total bytes).  Per-CPU maps take a list with
 * one value per CPU, or one value (not a list) for every CPU.  -1 with Fallback set
 * when the fast path cannot take VALUE (or a real error). */
static int value_bytes(MapOps *s, PyObject *value, char *vbuf)
{
	Py_ssize_t i;

	if (!s->ncpu)
		return encode_one(s, value, vbuf);
	memset(vbuf, 0, (size_t)s->value_total);
	if (PyList_CheckExact(value)) {
		if (PyList_GET_SIZE(value) != s->ncpu) {
			PyErr_SetNone(Fallback);  /* Python says how many */
			return -1;
		}
		for (i = 0; i < s->ncpu; i++) {
			PyObject *v;
			int r;

			if (i >= PyList_GET_SIZE(value)) {	/* changed by an encoder */
				PyErr_SetNone(Fallback);
				return -1;
			}
			v = PyList_GET_ITEM(value, i);
			Py_INCREF(v);
			r = encode_one(s, v, vbuf + i * s->stride);
			Py_DECREF(v);
			if (r < 0)
				return -1;
		}
		return 0;
	}
	if (encode_one(s, value, vbuf) < 0)
		return -1;
	for (i = 1; i < s->ncpu; i++)
		memcpy(vbuf + i * s->stride, vbuf, (size_t)s->value_size);
	return 0;
}

/* ---- methods ---------------------------------------------------------------- */

/* Methods of an instance whose __init__ did not complete refuse to run. */
#define READY(s)							\
	do {								\
		if (!(s)->ready) {					\
			PyErr_SetString(PyExc_ValueError,		\
					"pybpf._fastpath: MapOps not initialised"); \
			return NULL;					\
		}							\
	} while (0)

static PyObject *lookup_common(MapOps *s, PyObject *key, PyObject *dflt)
{
	uint64_t kbuf[KEY_STACK / 8];
	const void *kp;
	PyObject *hold, *v;
	char stack[STACK_VALUE], *vbuf;
	int err;

	READY(s);

	if (key_bytes(s, key, kbuf, &kp, &hold) < 0)
		return NULL;
	vbuf = value_buf(s, stack);
	if (!vbuf) {
		Py_XDECREF(hold);
		return NULL;
	}
	err = elem_op(s, BPF_MAP_LOOKUP_ELEM, kp, vbuf, 0);
	Py_XDECREF(hold);
	if (!err) {
		v = decode_value(s, vbuf);
		value_buf_free(vbuf, stack);
		return v;
	}
	value_buf_free(vbuf, stack);
	if (err == ENOENT) {
		if (dflt) {
			Py_INCREF(dflt);
			return dflt;
		}
		raise_key_error(key);
		return NULL;
	}
	return raise_errno(err);
}

static PyObject *MapOps_lookup(MapOps *s, PyObject *key)
{
	return lookup_common(s, key, NULL);
}

/* Raw: the value's bytes for the key's bytes, or None. */
static PyObject *MapOps_lookup_bytes(MapOps *s, PyObject *key)
{
	PyObject *out;
	char stack[STACK_VALUE], *vbuf;
	int err;

	READY(s);

	if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != s->key_size) {
		PyErr_SetNone(Fallback);
		return NULL;
	}
	vbuf = value_buf(s, stack);
	if (!vbuf)
		return NULL;
	err = elem_op(s, BPF_MAP_LOOKUP_ELEM, PyBytes_AS_STRING(key), vbuf, 0);
	out = err ? NULL : PyBytes_FromStringAndSize(vbuf, s->value_total);
	value_buf_free(vbuf, stack);
	if (err == ENOENT)
		Py_RETURN_NONE;
	if (err)
		return raise_errno(err);
	return out;
}

static PyObject *MapOps_get(MapOps *s, PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 2) {
		PyErr_SetString(PyExc_TypeError, "get(key, default)");
		return NULL;
	}
	return lookup_common(s, args[0], args[1]);
}

static PyObject *MapOps_contains(MapOps *s, PyObject *key)
{
	uint64_t kbuf[KEY_STACK / 8];
	const void *kp;
	PyObject *hold;
	char stack[STACK_VALUE], *vbuf;
	int err;

	READY(s);

	if (key_bytes(s, key, kbuf, &kp, &hold) < 0)
		return NULL;
	vbuf = value_buf(s, stack);
	if (!vbuf) {
		Py_XDECREF(hold);
		return NULL;
	}
	err = elem_op(s, BPF_MAP_LOOKUP_ELEM, kp, vbuf, 0);
	value_buf_free(vbuf, stack);
	Py_XDECREF(hold);
	if (err == ENOENT)
		Py_RETURN_FALSE;
	if (err)
		return raise_errno(err);
	Py_RETURN_TRUE;
}

static PyObject *MapOps_update(MapOps *s, PyObject *const *args, Py_ssize_t nargs)
{
	uint64_t kbuf[KEY_STACK / 8], flags = 0;
	const void *kp;
	PyObject *khold;
	char stack[STACK_VALUE], *vbuf;
	int err;

	READY(s);

	if (nargs != 2 && nargs != 3) {
		PyErr_SetString(PyExc_TypeError, "update(key, value[, flags])");
		return NULL;
	}
	if (nargs == 3) {
		flags = PyLong_AsUnsignedLongLong(args[2]);
		if (flags == (uint64_t)-1 && PyErr_Occurred())
			return NULL;
	}
	if (key_bytes(s, args[0], kbuf, &kp, &khold) < 0)
		return NULL;
	vbuf = value_buf(s, stack);
	if (!vbuf) {
		Py_XDECREF(khold);
		return NULL;
	}
	if (value_bytes(s, args[1], vbuf) < 0) {
		value_buf_free(vbuf, stack);
		Py_XDECREF(khold);
		return NULL;
	}
	err = elem_op(s, BPF_MAP_UPDATE_ELEM, kp, vbuf, flags);
	value_buf_free(vbuf, stack);
	Py_XDECREF(khold);
	if (err)
		return raise_errno(err);
	Py_RETURN_NONE;
}

static PyObject *MapOps_delete(MapOps *s, PyObject *key)
{
	uint64_t kbuf[KEY_STACK / 8];
	const void *kp;
	PyObject *hold;
	int err;

	READY(s);

	if (key_bytes(s, key, kbuf, &kp, &hold) < 0)
		return NULL;
	err = elem_op(s, BPF_MAP_DELETE_ELEM, kp, NULL, 0);
	Py_XDECREF(hold);
	if (err == ENOENT) {
		raise_key_error(key);
		return NULL;
	}
	if (err)
		return raise_errno(err);
	Py_RETURN_NONE;
}

/* ---- MapBase: m[k], m[k] = v, del m[k], k in m of TypedMap, in C ------------------- */

/* The base of pybpf.mapkinds.TypedMap.  Its `_ops` is the map's MapOps (built by the
 * Python method _make_ops on first use); the mapping slots call it straight from the
 * subscript, without a Python frame.  Whatever MapOps does not finish (Fallback, a
 * kernel error, a closed map, no MapOps for this map) goes to the Python method
 * `_c_failed(op, key, value, exc)`, which validates, explains and names the map. */
typedef struct {
	PyObject_HEAD
	PyObject *ops;
} MapBase;

static PyObject *s_make_ops, *s_c_failed, *s_missing, *s_get, *s_set, *s_del, *s_in, *s_raw;

/* The MapOps to use (a new reference: Python code that runs during the call, a
 * codec or set_types(), may replace m->ops), or NULL with *exc set to the exception
 * to hand on (a Fallback for a map that C cannot serve), or NULL with no *exc and an
 * error raised. */
static MapOps *map_ops(MapBase *m, PyObject **exc)
{
	PyObject *ops = m->ops;

	*exc = NULL;
	if (!ops || ops == Py_None) {
		ops = PyObject_CallMethodNoArgs((PyObject *)m, s_make_ops);
		if (!ops)
			return NULL;
		Py_DECREF(ops);	/* _make_ops stored it in m->ops */
		ops = m->ops;
	}
	if (ops && Py_IS_TYPE(ops, &MapOpsType) && ((MapOps *)ops)->ready) {
		Py_INCREF(ops);
		return (MapOps *)ops;
	}
	*exc = PyObject_CallNoArgs(Fallback);
	return NULL;
}

/* Hand the failed operation to Python: the raised exception; a missing key (KeyError)
 * becomes the error the map's _missing(key) makes (a MapKeyError naming the map). */
static PyObject *map_failed(MapBase *m, PyObject *op, PyObject *key, PyObject *value,
			    PyObject *exc)
{
	PyObject *r;

	if (!exc) {
		PyObject *type, *tb;

		if (PyErr_ExceptionMatches(PyExc_KeyError) &&
		    !PyErr_ExceptionMatches(Fallback)) {
			PyErr_Clear();
			r = PyObject_CallMethodOneArg((PyObject *)m, s_missing, key);
			if (r) {
				PyErr_SetObject((PyObject *)Py_TYPE(r), r);
				Py_DECREF(r);
			}
			return NULL;
		}
		PyErr_Fetch(&type, &exc, &tb);
		PyErr_NormalizeException(&type, &exc, &tb);
		if (exc && tb)
			PyException_SetTraceback(exc, tb);
		Py_XDECREF(type);
		Py_XDECREF(tb);
		if (!exc)
			return NULL;
	}
	r = PyObject_CallMethodObjArgs((PyObject *)m, s_c_failed, op, key,
				       value ? value : Py_None, exc, NULL);
	Py_DECREF(exc);
	return r;
}

static PyObject *MapBase_subscript(MapBase *m, PyObject *key)
{
	PyObject *exc, *r;
	MapOps *ops = map_ops(m, &exc);

	if (ops) {
		r = lookup_common(ops, key, NULL);
		Py_DECREF(ops);
		if (r)
			return r;
	} else if (!exc) {
		return NULL;
	}
	return map_failed(m, s_get, key, NULL, exc);
}

static int MapBase_ass_subscript(MapBase *m, PyObject *key, PyObject *value)
{
	PyObject *exc, *r, *args[2] = {key, value};
	MapOps *ops = map_ops(m, &exc);

	if (ops) {
		r = value ? MapOps_update(ops, args, 2) : MapOps_delete(ops, key);
		Py_DECREF(ops);
		if (r) {
			Py_DECREF(r);
			return 0;
		}
	} else if (!exc) {
		return -1;
	}
	r = map_failed(m, value ? s_set : s_del, key, value, exc);
	Py_XDECREF(r);
	return r ? 0 : -1;
}

static int MapBase_contains(MapBase *m, PyObject *key)
{
	PyObject *exc, *r;
	MapOps *ops = map_ops(m, &exc);
	int t;

	if (ops) {
		r = MapOps_contains(ops, key);
		Py_DECREF(ops);
		if (r) {
			t = r == Py_True;
			Py_DECREF(r);
			return t;
		}
	} else if (!exc) {
		return -1;
	}
	r = map_failed(m, s_in, key, NULL, exc);
	if (!r)
		return -1;
	t = PyObject_IsTrue(r);
	Py_DECREF(r);
	return t;
}

/* m.lookup(key, *, flags=0) -> bytes | None: the raw lookup (TypedMap's), in C when
 * the key is key_size bytes and flags is 0; anything else, and every failure, goes to
 * _c_failed("raw", key, flags, exc), which does what Map.lookup does. */
static PyObject *MapBase_lookup(MapBase *m, PyObject *const *args, Py_ssize_t nargs,
				PyObject *kwnames)
{
	PyObject *exc = NULL, *key = nargs == 1 ? args[0] : NULL, *flags = NULL, *r;
	MapOps *ops;
	Py_ssize_t i, nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;

	for (i = 0; i < nkw; i++) {
		PyObject *name = PyTuple_GET_ITEM(kwnames, i);

		if (!key && !PyUnicode_CompareWithASCIIString(name, "key")) {
			key = args[nargs + i];
		} else if (!flags && !PyUnicode_CompareWithASCIIString(name, "flags")) {
			flags = args[nargs + i];
		} else {
			PyErr_Format(PyExc_TypeError, "lookup() got an unexpected keyword argument %R",
				     name);
			return NULL;
		}
	}
	if (!key || nargs > 1) {
		PyErr_SetString(PyExc_TypeError, "lookup() takes one key: lookup(key, *, flags=0)");
		return NULL;
	}
	if (flags && !(PyLong_CheckExact(flags) && PyObject_Not(flags) == 1)) {
		exc = PyObject_CallNoArgs(Fallback);	/* flags: Python's path */
		return exc ? map_failed(m, s_raw, key, flags, exc) : NULL;
	}
	ops = map_ops(m, &exc);
	if (ops) {
		r = MapOps_lookup_bytes(ops, key);
		Py_DECREF(ops);
		if (r)
			return r;
	} else if (!exc) {
		return NULL;
	}
	return map_failed(m, s_raw, key, flags, exc);
}

static PyMethodDef MapBase_methods[] = {
	{"lookup", (PyCFunction)(void (*)(void))MapBase_lookup, METH_FASTCALL | METH_KEYWORDS,
	 "lookup($self, key, *, flags=0)\n--\n\n"
	 "The value bytes for ``key`` (key_size bytes), or None if absent: one syscall,\n"
	 "made from C. Per-CPU maps return every possible CPU's value, each padded to 8\n"
	 "bytes. ``flags`` (e.g. BPF_F_LOCK) takes the Python path of Map.lookup."},
	{NULL, NULL, 0, NULL},
};

static int MapBase_traverse(MapBase *m, visitproc visit, void *arg)
{
	Py_VISIT(m->ops);
	return 0;
}

static int MapBase_clear(MapBase *m)
{
	Py_CLEAR(m->ops);
	return 0;
}

static void MapBase_dealloc(MapBase *m)
{
	PyObject_GC_UnTrack(m);
	MapBase_clear(m);
	Py_TYPE(m)->tp_free((PyObject *)m);
}

static PyMemberDef MapBase_members[] = {
	{"_ops", T_OBJECT, offsetof(MapBase, ops), 0,
	 "the map's MapOps once used (None before)"},
	{NULL, 0, 0, 0, NULL},
};

static PyMappingMethods MapBase_as_mapping = {
	.mp_subscript = (binaryfunc)MapBase_subscript,
	.mp_ass_subscript = (objobjargproc)MapBase_ass_subscript,
};

static PySequenceMethods MapBase_as_sequence = {
	.sq_contains = (objobjproc)MapBase_contains,
};

static PyTypeObject MapBaseType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "pybpf._fastpath.MapBase",
	.tp_doc = "Base of TypedMap: m[k], m[k] = v, del m[k] and k in m in C (see _fastpath.c).",
	.tp_basicsize = sizeof(MapBase),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
	.tp_dealloc = (destructor)MapBase_dealloc,
	.tp_traverse = (traverseproc)MapBase_traverse,
	.tp_clear = (inquiry)MapBase_clear,
	.tp_members = MapBase_members,
	.tp_methods = MapBase_methods,
	.tp_as_mapping = &MapBase_as_mapping,
	.tp_as_sequence = &MapBase_as_sequence,
};

static int mapbase_init_module(PyObject *m)
{
	if (!(s_make_ops = PyUnicode_InternFromString("_make_ops")) ||
	    !(s_c_failed = PyUnicode_InternFromString("_c_failed")) ||
	    !(s_missing = PyUnicode_InternFromString("_missing")) ||
	    !(s_get = PyUnicode_InternFromString("get")) ||
	    !(s_set = PyUnicode_InternFromString("set")) ||
	    !(s_del = PyUnicode_InternFromString("del")) ||
	    !(s_in = PyUnicode_InternFromString("in")) ||
	    !(s_raw = PyUnicode_InternFromString("raw")))
		return -1;
	MapBaseType.tp_base = &PyBaseObject_Type;
	MapBaseType.tp_new = PyBaseObject_Type.tp_new;  /* object.__new__(cls) stays valid */
	if (PyType_Ready(&MapBaseType) < 0)
		return -1;
	Py_INCREF(&MapBaseType);
	if (PyModule_AddObject(m, "MapBase", (PyObject *)&MapBaseType) < 0) {
		Py_DECREF(&MapBaseType);
		return -1;
	}
	return 0;
}

/* ---- construction ----------------------------------------------------------- */

static const char CODES[] = "BHIQbhiq?fd";

static Py_ssize_t code_size(char c)
{
	switch (c) {
	case 'B': case 'b': case '?': return 1;
	case 'H': case 'h': return 2;
	case 'I': case 'i': case 'f': return 4;
	default: return 8;
	}
}

/* The byte offset of a __slots__ member of CLS from its descriptor. */
static Py_ssize_t slot_offset(PyObject *cls, PyObject *descr)
{
	PyMemberDef *m;

	if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
	    !PyType_IsSubtype((PyTypeObject *)cls, ((PyDescrObject *)descr)->d_type)) {
		PyErr_SetString(PyExc_TypeError, "pybpf._fastpath: not a __slots__ member");
		return -1;
	}
	m = ((PyMemberDescrObject *)descr)->d_member;
	if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
		PyErr_SetString(PyExc_TypeError, "pybpf._fastpath: not a writable object slot");
		return -1;
	}
	return m->offset;
}

/* Parse FIELDS ((code, byte_offset, slot_descriptor_or_None, enum_dict_or_None), ...)
 * for values of SIZE bytes into L: CLS None with one field is a scalar value. */
static int layout_init(struct layout *l, PyObject *cls, PyObject *spec, Py_ssize_t size)
{
	Py_ssize_t i, n = PyTuple_GET_SIZE(spec);
	struct field *fields;

	if (cls != Py_None && !PyType_Check(cls)) {
		PyErr_SetString(PyExc_TypeError, "pybpf._fastpath: cls must be a class or None");
		return -1;
	}
	if (n > 1 && cls == Py_None) {
		PyErr_SetString(PyExc_ValueError, "pybpf._fastpath: fields without a class");
		return -1;
	}
	if (n == 0)
		return 0;
	fields = PyMem_Calloc((size_t)n, sizeof(struct field));
	if (!fields) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < n; i++) {
		PyObject *t = PyTuple_GET_ITEM(spec, i);
		const char *code;
		Py_ssize_t off, clen;
		PyObject *descr, *members;
		struct field *f = &fields[i];

		if (!PyArg_ParseTuple(t, "s#nOO", &code, &clen, &off, &descr, &members))
			goto fail;
		if (clen != 1 || !strchr(CODES, code[0]) || off < 0 ||
		    off + code_size(code[0]) > size) {
			PyErr_SetString(PyExc_ValueError, "pybpf._fastpath: bad field");
			goto fail;
		}
		f->code = code[0];
		f->off = off;
		f->slot = -1;
		if (cls != Py_None) {
			f->slot = slot_offset(cls, descr);
			if (f->slot < 0)
				goto fail;
			f->name = PyDescr_NAME(descr);  /* kept alive by spec */
		}
		if (members != Py_None) {
			if (!PyDict_Check(members)) {
				PyErr_SetString(PyExc_TypeError, "pybpf._fastpath: enum members: a dict");
				goto fail;
			}
			f->members = members;  /* kept alive by spec */
		}
	}
	l->fields = fields;
	l->nfields = n;
	Py_INCREF(spec);
	l->spec = spec;
	if (cls != Py_None) {
		Py_INCREF(cls);
		l->cls = (PyTypeObject *)cls;
	}
	return 0;
fail:
	PyMem_Free(fields);
	return -1;
}

static void layout_clear(struct layout *l)
{
	Py_CLEAR(l->cls);
	Py_CLEAR(l->spec);
}

static void layout_free(struct layout *l)
{
	layout_clear(l);
	PyMem_Free(l->fields);
	l->fields = NULL;
	l->nfields = 0;
}

/* MapOps(owner: FD, key_size, value_size, key_int, kenc, cls, fields, vdec, venc,
 *        ncpu=0, kcls=None, kfields=())
 * fields: see layout_init; empty: values go through vdec/venc.  ncpu > 0: a per-CPU
 * map, whose values are NCPU values of VALUE_SIZE bytes each, 8 bytes aligned.
 * kcls, kfields: the key's layout (see layout_init), for struct keys C converts itself
 * (at most KEY_STACK bytes); others go through kenc. */
static int MapOps_init(MapOps *s, PyObject *args, PyObject *kw)
{
	int key_int;
	Py_ssize_t ks, vs, ncpu = 0;
	PyObject *owner, *kenc, *cls, *spec, *vdec, *venc, *kcls = Py_None, *kspec = NULL;

	if (kw && PyDict_GET_SIZE(kw)) {
		PyErr_SetString(PyExc_TypeError, "MapOps takes positional arguments");
		return -1;
	}
	if (s->ready || s->lay.fields || s->klay.fields) {
		PyErr_SetString(PyExc_TypeError, "MapOps is initialised once");
		return -1;
	}
	if (!PyArg_ParseTuple(args, "O!nnpOOO!OO|nOO!", &FDType, &owner, &ks, &vs, &key_int, &kenc,
			      &cls, &PyTuple_Type, &spec, &vdec, &venc, &ncpu, &kcls,
			      &PyTuple_Type, &kspec))
		return -1;
	if (ncpu < 0 || ncpu > 65536 || vs > PY_SSIZE_T_MAX / 65536 - 8) {
		PyErr_SetString(PyExc_ValueError, "pybpf._fastpath: bad CPU count or value size");
		return -1;
	}
	key_int = key_int ? (int)ks : 0;
	if ((key_int && key_int != 4 && key_int != 8) || ks <= 0 || vs <= 0) {
		PyErr_SetString(PyExc_ValueError, "pybpf._fastpath: bad key or value size");
		return -1;
	}
	if (PyTuple_GET_SIZE(spec) == 0 && (vdec == Py_None || venc == Py_None)) {
		PyErr_SetString(PyExc_ValueError, "pybpf._fastpath: no fields and no codec");
		return -1;
	}
	if (layout_init(&s->lay, cls, spec, vs) < 0)
		return -1;
	if (kspec && PyTuple_GET_SIZE(kspec) && ks <= KEY_STACK &&
	    layout_init(&s->klay, kcls, kspec, ks) < 0) {
		layout_free(&s->lay);
		return -1;
	}
	Py_INCREF(owner);
	s->owner = (FDObject *)owner;
	s->key_size = ks;
	s->value_size = vs;
	s->ncpu = ncpu;
	s->stride = ncpu ? (vs + 7) / 8 * 8 : vs;
	s->value_total = ncpu ? ncpu * s->stride : vs;
	s->key_int = key_int;
	if (kenc != Py_None) {
		Py_INCREF(kenc);
		s->kenc = kenc;
	}
	if (vdec != Py_None) {
		Py_INCREF(vdec);
		s->vdec = vdec;
	}
	if (venc != Py_None) {
		Py_INCREF(venc);
		s->venc = venc;
	}
	s->ready = 1;
	return 0;
}

static int MapOps_traverse(MapOps *s, visitproc visit, void *arg)
{
	Py_VISIT(s->owner);
	Py_VISIT(s->kenc);
	Py_VISIT(s->lay.cls);
	Py_VISIT(s->lay.spec);
	Py_VISIT(s->klay.cls);
	Py_VISIT(s->klay.spec);
	Py_VISIT(s->vdec);
	Py_VISIT(s->venc);
	return 0;
}

static int MapOps_clear(MapOps *s)
{
	s->ready = 0;  /* methods refuse from now on */
	Py_CLEAR(s->owner);
	Py_CLEAR(s->kenc);
	Py_CLEAR(s->vdec);
	Py_CLEAR(s->venc);
	layout_free(&s->lay);
	layout_free(&s->klay);
	return 0;
}

static void MapOps_dealloc(MapOps *s)
{
	PyObject_GC_UnTrack(s);
	MapOps_clear(s);
	Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef MapOps_methods[] = {
	{"lookup", (PyCFunction)MapOps_lookup, METH_O,
	 "lookup(key) -> value; KeyError if absent."},
	{"lookup_bytes", (PyCFunction)MapOps_lookup_bytes, METH_O,
	 "lookup_bytes(key: bytes) -> bytes, or None if absent."},
	{"get", (PyCFunction)(void (*)(void))MapOps_get, METH_FASTCALL,
	 "get(key, default) -> value, or default if absent."},
	{"contains", (PyCFunction)MapOps_contains, METH_O, "contains(key) -> bool."},
	{"update", (PyCFunction)(void (*)(void))MapOps_update, METH_FASTCALL,
	 "update(key, value[, flags]): BPF_MAP_UPDATE_ELEM."},
	{"delete", (PyCFunction)MapOps_delete, METH_O,
	 "delete(key); KeyError if absent."},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject MapOpsType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "pybpf._fastpath.MapOps",
	.tp_doc = "Single-key operations of one map, in C (see pybpf/_fastpath.c).",
	.tp_basicsize = sizeof(MapOps),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)MapOps_init,
	.tp_dealloc = (destructor)MapOps_dealloc,
	.tp_traverse = (traverseproc)MapOps_traverse,
	.tp_clear = (inquiry)MapOps_clear,
	.tp_methods = MapOps_methods,
};

/* ---- Decoder: the same conversion for any buffer ------------------------------ */

typedef struct {
	PyObject_HEAD
	struct layout lay;
	Py_ssize_t size;
	PyObject *name;		/* the C type's name, for errors */
} Decoder;

static int Decoder_init(Decoder *d, PyObject *args, PyObject *kw)
{
	PyObject *name, *cls, *spec;
	Py_ssize_t size;

	if (kw && PyDict_GET_SIZE(kw)) {
		PyErr_SetString(PyExc_TypeError, "Decoder takes positional arguments");
		return -1;
	}
	if (d->lay.fields) {
		PyErr_SetString(PyExc_TypeError, "Decoder is initialised once");
		return -1;
	}
	if (!PyArg_ParseTuple(args, "UnOO!", &name, &size, &cls, &PyTuple_Type, &spec))
		return -1;
	if (size <= 0 || PyTuple_GET_SIZE(spec) == 0) {
		PyErr_SetString(PyExc_ValueError, "pybpf._fastpath: Decoder needs a size and fields");
		return -1;
	}
	if (layout_init(&d->lay, cls, spec, size) < 0)
		return -1;
	d->size = size;
	Py_INCREF(name);
	d->name = name;
	return 0;
}

/* BUF's bytes (a view to release when VIEW->obj is set), checked to hold NEED bytes. */
static const char *decoder_buf(Decoder *d, PyObject *buf, Py_buffer *view, Py_ssize_t need)
{
	const char *p;
	Py_ssize_t len;

	view->obj = NULL;
	if (!d->lay.nfields) {
		PyErr_SetString(PyExc_ValueError, "pybpf._fastpath: Decoder not initialised");
		return NULL;
	}
	if (PyBytes_CheckExact(buf)) {
		p = PyBytes_AS_STRING(buf);
		len = PyBytes_GET_SIZE(buf);
	} else {
		if (PyObject_GetBuffer(buf, view, PyBUF_SIMPLE) < 0)
			return NULL;
		p = view->buf;
		len = view->len;
	}
	if (need > len) {
		PyErr_Format(PyExc_ValueError, "%U: need %zd bytes, got %zd", d->name, need, len);
		if (view->obj)
			PyBuffer_Release(view);
		view->obj = NULL;
		return NULL;
	}
	return p;
}

static int ssize_arg(PyObject *o, Py_ssize_t *out, const char *what)
{
	Py_ssize_t v = PyLong_AsSsize_t(o);

	if (v == -1 && PyErr_Occurred())
		return -1;
	if (v < 0) {
		PyErr_Format(PyExc_ValueError, "%s must be >= 0, got %zd", what, v);
		return -1;
	}
	*out = v;
	return 0;
}

/* decode(buf, off=0) -> the value at OFF */
static PyObject *Decoder_decode(Decoder *d, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer view;
	Py_ssize_t off = 0;
	const char *p;
	PyObject *v;

	if (nargs < 1 || nargs > 2) {
		PyErr_SetString(PyExc_TypeError, "decode(buf, off=0)");
		return NULL;
	}
	if (nargs == 2 && ssize_arg(args[1], &off, "offset") < 0)
		return NULL;
	if (off > PY_SSIZE_T_MAX - d->size) {
		PyErr_SetString(PyExc_OverflowError, "offset too large");
		return NULL;
	}
	p = decoder_buf(d, args[0], &view, off + d->size);
	if (!p)
		return NULL;
	v = layout_decode(&d->lay, p + off);
	if (view.obj)
		PyBuffer_Release(&view);
	return v;
}

/* decode_array(buf, count, stride=size, base=0) -> list of COUNT values */
static PyObject *Decoder_decode_array(Decoder *d, PyObject *const *args, Py_ssize_t nargs)
{
	Py_buffer view;
	Py_ssize_t count, stride = d->size, base = 0, i;
	const char *p;
	PyObject *out;
#if PY_VERSION_HEX >= 0x030A0000
	int gc_was;
#endif

	if (nargs < 2 || nargs > 4) {
		PyErr_SetString(PyExc_TypeError, "decode_array(buf, count, stride=size, base=0)");
		return NULL;
	}
	if (ssize_arg(args[1], &count, "count") < 0 ||
	    (nargs > 2 && ssize_arg(args[2], &stride, "stride") < 0) ||
	    (nargs > 3 && ssize_arg(args[3], &base, "base") < 0))
		return NULL;
	if (count && (stride < d->size ||
		      (count - 1) > (PY_SSIZE_T_MAX - base - d->size) / stride)) {
		PyErr_SetString(PyExc_ValueError, "decode_array: bad stride or count");
		return NULL;
	}
	p = decoder_buf(d, args[0], &view, count ? base + (count - 1) * stride + d->size : 0);
	if (!p)
		return NULL;
	out = PyList_New(count);
	if (out) {
#if PY_VERSION_HEX >= 0x030A0000
		/* No Python code runs in this loop and its objects hold no cycles: the
		 * collector looks at them once afterwards, not every 700 objects. */
		gc_was = PyGC_Disable();
#endif
		for (i = 0; i < count; i++) {
			PyObject *v = layout_decode(&d->lay, p + base + i * stride);

			if (!v) {
				Py_CLEAR(out);
				break;
			}
			PyList_SET_ITEM(out, i, v);
		}
#if PY_VERSION_HEX >= 0x030A0000
		if (gc_was)
			PyGC_Enable();
#endif
	}
	if (view.obj)
		PyBuffer_Release(&view);
	return out;
}

static int Decoder_traverse(Decoder *d, visitproc visit, void *arg)
{
	Py_VISIT(d->lay.cls);
	Py_VISIT(d->lay.spec);
	return 0;
}

static int Decoder_clear(Decoder *d)
{
	layout_free(&d->lay);
	Py_CLEAR(d->name);
	return 0;
}

static void Decoder_dealloc(Decoder *d)
{
	PyObject_GC_UnTrack(d);
	Decoder_clear(d);
	Py_TYPE(d)->tp_free((PyObject *)d);
}

static PyMethodDef Decoder_methods[] = {
	{"decode", (PyCFunction)(void (*)(void))Decoder_decode, METH_FASTCALL,
	 "decode(buf, off=0) -> the value at OFF."},
	{"decode_array", (PyCFunction)(void (*)(void))Decoder_decode_array, METH_FASTCALL,
	 "decode_array(buf, count, stride=size, base=0) -> list of COUNT values."},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject DecoderType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "pybpf._fastpath.Decoder",
	.tp_doc = "Decode a BTF layout of scalars from any buffer, in C (see pybpf/_fastpath.c).",
	.tp_basicsize = sizeof(Decoder),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Decoder_init,
	.tp_dealloc = (destructor)Decoder_dealloc,
	.tp_traverse = (traverseproc)Decoder_traverse,
	.tp_clear = (inquiry)Decoder_clear,
	.tp_methods = Decoder_methods,
};

static struct PyModuleDef fastpath_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "pybpf._fastpath",
	.m_doc = "Single-key typed map operations in C (see pybpf/_fastpath.c).",
	.m_size = -1,
};

PyMODINIT_FUNC PyInit__fastpath(void)
{
	PyObject *m;

	if (PyType_Ready(&MapOpsType) < 0 || PyType_Ready(&DecoderType) < 0)
		return NULL;
	m = PyModule_Create(&fastpath_module);
	if (!m)
		return NULL;
	Fallback = PyErr_NewExceptionWithDoc("pybpf._fastpath.Fallback",
					     "The fast path cannot take this key or value.",
					     NULL, NULL);
	if (!Fallback || PyModule_AddObject(m, "Fallback", Fallback) < 0) {
		Py_XDECREF(Fallback);
		Py_DECREF(m);
		return NULL;
	}
	Py_INCREF(Fallback);
	Py_INCREF(&MapOpsType);
	if (pybpf_fd_module_init(m) < 0 || pybpf_values_module_init(m) < 0 ||
	    pybpf_sysmap_module_init(m) < 0 ||
	    mapbase_init_module(m) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	if (PyModule_AddObject(m, "MapOps", (PyObject *)&MapOpsType) < 0) {
		Py_DECREF(&MapOpsType);
		Py_DECREF(m);
		return NULL;
	}
	Py_INCREF(&DecoderType);
	if (PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0) {
		Py_DECREF(&DecoderType);
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
