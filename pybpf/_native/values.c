/* SPDX-License-Identifier: Apache-2.0 */
/* Struct values in C: the base of the classes pybpf generates for BTF structs and
 * unions (pybpf.types.Struct derives from StructBase).
 *
 * A generated class keeps its members in __slots__ (attribute access is already C);
 * its `_shape` (a Shape, built once per class from the layout) lists those slots with
 * each member's default.  StructBase.__init__ fills the slots from positional and
 * keyword arguments in C, and == compares two values of one class slot by slot in C.
 * Values of another class (the same C type from another BTF) are compared by the
 * class's Python `_eq_other`. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include "values.h"

typedef struct {
	PyObject_HEAD
	PyTypeObject *cls;	/* the class whose slots these are */
	Py_ssize_t n;
	Py_ssize_t *slot;	/* byte offset of each member's slot in an instance */
	PyObject *names;	/* tuple of the attribute names (interned) */
	PyObject *defaults;	/* tuple: each member's default (immutable), or None */
	PyObject *factories;	/* tuple: a callable making the default (mutable ones), or None */
} Shape;

static PyObject *shape_attr;	/* "_shape" */
static void struct_dealloc(PyObject *self);
static PyObject *struct_alloc(PyTypeObject *tp, Py_ssize_t nitems);
static int StructBase_init(PyObject *self, PyObject *args, PyObject *kw);
static PyObject *StructBase_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
				       PyObject *kwnames);
static PyObject *eq_other_attr;	/* "_eq_other" */

/* The byte offset of a __slots__ member of CLS from its descriptor. */
static Py_ssize_t member_offset(PyTypeObject *cls, PyObject *descr)
{
	PyMemberDef *m;

	if (!Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
	    !PyType_IsSubtype(cls, ((PyDescrObject *)descr)->d_type)) {
		PyErr_SetString(PyExc_TypeError, "pybpf._fastpath.Shape: not a __slots__ member");
		return -1;
	}
	m = ((PyMemberDescrObject *)descr)->d_member;
	if (m->type != T_OBJECT_EX || (m->flags & READONLY)) {
		PyErr_SetString(PyExc_TypeError, "pybpf._fastpath.Shape: not a writable object slot");
		return -1;
	}
	return m->offset;
}

/* ---- instances: allocation with a free list ------------------------------------
 *
 * A lookup builds one instance per call and the caller usually drops it before the
 * next: instances of a generated class whose layout is only its __slots__ (no
 * __dict__, __weakref__ or finalizer anywhere in its bases) are allocated and freed
 * here.  A freed instance's memory (GC header included, untracked) is kept on a short
 * list by size and given to the next instance of any such class of that size
 * (PyObject_Init then sets its class).  The class itself stays an ordinary heap type:
 * subclasses, pickling, copy and the collector see no difference; a subclass's
 * instances are freed normally after subtype_dealloc has cleared its own slots. */

#if !defined(Py_GIL_DISABLED)
#define RECYCLE 1
#define FREE_SIZES 68	/* basicsize in words: PyObject + up to 64 slots, and a margin */
#define FREE_MAX 16
static PyObject *free_list[FREE_SIZES][FREE_MAX];
static int free_count[FREE_SIZES];
#endif

/* Whether instances of TP (and of its bases up to StructBase) are only object slots:
 * their body is all NULL once clear_slots() ran. */
static int only_slots(PyTypeObject *tp)
{
	PyTypeObject *t;
	Py_ssize_t n = 0;

	for (t = tp; t && t != &StructBaseType; t = t->tp_base) {
		PyMemberDef *mp;

		for (mp = t->tp_members; mp && mp->name; mp++) {
			if (mp->type != T_OBJECT_EX || (mp->flags & READONLY))
				return 0;
			n++;
		}
		if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE) || t->tp_itemsize || t->tp_dictoffset ||
		    t->tp_weaklistoffset || t->tp_finalize || t->tp_del)
			return 0;
#ifdef Py_TPFLAGS_MANAGED_DICT
		if (t->tp_flags & Py_TPFLAGS_MANAGED_DICT)
			return 0;
#endif
#ifdef Py_TPFLAGS_MANAGED_WEAKREF
		if (t->tp_flags & Py_TPFLAGS_MANAGED_WEAKREF)
			return 0;
#endif
	}
	return t == &StructBaseType &&
	       tp->tp_basicsize == (Py_ssize_t)sizeof(PyObject) + n * (Py_ssize_t)sizeof(PyObject *);
}

/* Give CLS (a generated struct class, fresh from type()) this file's alloc and dealloc. */
static void recycle_instances(PyTypeObject *cls)
{
	PyTypeObject *base = cls->tp_base;

	/* type() gave CLS and its base (Struct) the same dealloc, subtype_dealloc */
	if (cls->tp_dealloc == struct_dealloc || !base || !(base->tp_flags & Py_TPFLAGS_HEAPTYPE) ||
	    cls->tp_dealloc != base->tp_dealloc ||
	    cls->tp_alloc != PyType_GenericAlloc || cls->tp_free != PyObject_GC_Del ||
	    !PyType_IS_GC(cls) || !only_slots(cls))
		return;
	cls->tp_alloc = struct_alloc;
	cls->tp_dealloc = struct_dealloc;
}

static PyObject *struct_alloc(PyTypeObject *tp, Py_ssize_t nitems)
{
#ifdef RECYCLE
	Py_ssize_t w = tp->tp_basicsize / (Py_ssize_t)sizeof(void *);

	if (nitems == 0 && w < FREE_SIZES && free_count[w] > 0) {
		PyObject *o = free_list[w][--free_count[w]];

		/* its slots, the whole body (only_slots), were cleared when it was freed */
		PyObject_Init(o, tp);	/* its class (a new reference), one reference */
		PyObject_GC_Track(o);
		return o;
	}
#endif
	return PyType_GenericAlloc(tp, nitems);
}

/* Keep SELF's memory for the next instance of its size (1), or not (0). */
static int recycled(PyObject *self, PyTypeObject *tp)
{
#ifdef RECYCLE
	Py_ssize_t w = tp->tp_basicsize / (Py_ssize_t)sizeof(void *);

	if (tp->tp_alloc == struct_alloc && !tp->tp_finalize && w < FREE_SIZES &&
	    free_count[w] < FREE_MAX) {
		free_list[w][free_count[w]++] = self;
		return 1;
	}
#endif
	return 0;
}

/* Whether the slots of SELF, an instance of a class recycle_instances() took (its body
 * is only slots), hold only ints, floats, bools or nothing (what lookups decode). */
static int only_numbers(PyObject *self, PyTypeObject *tp)
{
	PyObject **p = (PyObject **)(self + 1), **end = (PyObject **)((char *)self + tp->tp_basicsize);

	for (; p < end; p++)
		if (*p && !PyLong_CheckExact(*p) && !PyFloat_CheckExact(*p) && !PyBool_Check(*p))
			return 0;
	return 1;
}

/* The object slots of TP and of its heap-type bases, cleared as subtype_dealloc does. */
static void clear_slots(PyObject *self, PyTypeObject *tp)
{
	PyTypeObject *t;

	for (t = tp; t && (t->tp_flags & Py_TPFLAGS_HEAPTYPE); t = t->tp_base) {
		PyMemberDef *mp = t->tp_members;	/* type() made: its own __slots__ */

		for (; mp && mp->name; mp++) {
			if (mp->type == T_OBJECT_EX && !(mp->flags & READONLY)) {
				PyObject **p = (PyObject **)((char *)self + mp->offset);

				Py_CLEAR(*p);
			}
		}
	}
}

/* tp_dealloc of the classes recycle_instances() took, and the base dealloc that
 * subtype_dealloc calls for their subclasses' instances (tracked again, finalizer
 * run, own slots and __dict__ cleared). */
static void struct_dealloc(PyObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);

	if (tp->tp_dealloc == struct_dealloc && tp->tp_finalize) {  /* a __del__ added later */
		if (PyObject_CallFinalizerFromDealloc(self) < 0)
			return;	/* resurrected */
	}
	PyObject_GC_UnTrack(self);
	if (tp->tp_alloc == struct_alloc && only_numbers(self, tp)) {
		/* nothing it holds can free a chain of objects: no trashcan needed */
		PyObject **p = (PyObject **)(self + 1), **end = (PyObject **)((char *)self + tp->tp_basicsize);

		for (; p < end; p++)
			Py_CLEAR(*p);
		if (!recycled(self, tp))
			tp->tp_free(self);
		Py_DECREF(tp);
		return;
	}
	Py_TRASHCAN_BEGIN(self, struct_dealloc)
	clear_slots(self, tp);
	if (!recycled(self, tp))
		tp->tp_free(self);
	Py_DECREF(tp);
	Py_TRASHCAN_END
}

/* Shape(cls, members): members ((slot_descriptor, default, factory_or_None), ...) in
 * the order of cls._fields. */
static int Shape_init(Shape *sh, PyObject *args, PyObject *kw)
{
	PyObject *cls, *members, *names = NULL, *defaults = NULL, *factories = NULL;
	Py_ssize_t i, n, *slot = NULL;

	if (kw && PyDict_GET_SIZE(kw)) {
		PyErr_SetString(PyExc_TypeError, "Shape takes positional arguments");
		return -1;
	}
	if (sh->cls) {
		PyErr_SetString(PyExc_TypeError, "Shape is initialised once");
		return -1;
	}
	if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &cls, &PyTuple_Type, &members))
		return -1;
	if (!PyType_IsSubtype((PyTypeObject *)cls, &StructBaseType)) {
		PyErr_SetString(PyExc_TypeError, "pybpf._fastpath.Shape: not a StructBase class");
		return -1;
	}
	n = PyTuple_GET_SIZE(members);
	slot = PyMem_Calloc((size_t)(n ? n : 1), sizeof(*slot));
	names = PyTuple_New(n);
	defaults = PyTuple_New(n);
	factories = PyTuple_New(n);
	if (!slot || !names || !defaults || !factories) {
		PyErr_NoMemory();
		goto fail;
	}
	for (i = 0; i < n; i++) {
		PyObject *descr, *dflt, *factory, *name;

		if (!PyArg_ParseTuple(PyTuple_GET_ITEM(members, i), "OOO", &descr, &dflt, &factory))
			goto fail;
		slot[i] = member_offset((PyTypeObject *)cls, descr);
		if (slot[i] < 0)
			goto fail;
		if (factory != Py_None && !PyCallable_Check(factory)) {
			PyErr_SetString(PyExc_TypeError, "pybpf._fastpath.Shape: factory not callable");
			goto fail;
		}
		name = PyDescr_NAME(descr);
		Py_INCREF(name);
		PyUnicode_InternInPlace(&name);
		PyTuple_SET_ITEM(names, i, name);
		Py_INCREF(dflt);
		PyTuple_SET_ITEM(defaults, i, dflt);
		Py_INCREF(factory);
		PyTuple_SET_ITEM(factories, i, factory);
	}
	Py_INCREF(cls);
	sh->cls = (PyTypeObject *)cls;
	sh->n = n;
	/* Calling the class builds the instance in one C call, when nothing else takes
	 * part in construction (a Python __new__ or __init__, as unions have). */
	if (((PyTypeObject *)cls)->tp_init == StructBase_init &&
	    ((PyTypeObject *)cls)->tp_new == PyBaseObject_Type.tp_new && n <= 64) {
		((PyTypeObject *)cls)->tp_vectorcall = StructBase_vectorcall;
		recycle_instances((PyTypeObject *)cls);
	}
	sh->slot = slot;
	sh->names = names;
	sh->defaults = defaults;
	sh->factories = factories;
	return 0;
fail:
	PyMem_Free(slot);
	Py_XDECREF(names);
	Py_XDECREF(defaults);
	Py_XDECREF(factories);
	return -1;
}

static int Shape_traverse(Shape *sh, visitproc visit, void *arg)
{
	Py_VISIT(sh->cls);
	Py_VISIT(sh->defaults);
	Py_VISIT(sh->factories);
	return 0;
}

static int Shape_clear(Shape *sh)
{
	Py_CLEAR(sh->cls);
	Py_CLEAR(sh->names);
	Py_CLEAR(sh->defaults);
	Py_CLEAR(sh->factories);
	sh->n = 0;
	return 0;
}

static void Shape_dealloc(Shape *sh)
{
	PyObject_GC_UnTrack(sh);
	Shape_clear(sh);
	PyMem_Free(sh->slot);
	Py_TYPE(sh)->tp_free((PyObject *)sh);
}

PyTypeObject ShapeType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "pybpf._fastpath.Shape",
	.tp_doc = "The members of a generated struct class, for StructBase (see _native/values.c).",
	.tp_basicsize = sizeof(Shape),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)Shape_init,
	.tp_dealloc = (destructor)Shape_dealloc,
	.tp_traverse = (traverseproc)Shape_traverse,
	.tp_clear = (inquiry)Shape_clear,
};

/* The shape of TP (a new reference: Python code run meanwhile, a member's __eq__ or
 * default factory, may replace the class's _shape), or NULL (no exception) when it has
 * none. */
static Shape *shape_of(PyTypeObject *tp)
{
	PyObject *sh = _PyType_Lookup(tp, shape_attr);

	if (!sh || !Py_IS_TYPE(sh, &ShapeType) || !((Shape *)sh)->cls ||
	    !PyType_IsSubtype(tp, ((Shape *)sh)->cls))
		return NULL;
	Py_INCREF(sh);
	return (Shape *)sh;
}

static inline PyObject **slot_at(PyObject *o, const Shape *sh, Py_ssize_t i)
{
	return (PyObject **)((char *)o + sh->slot[i]);
}

static int set_slot(PyObject *o, const Shape *sh, Py_ssize_t i, PyObject *v)
{
	Py_INCREF(v);
	Py_XSETREF(*slot_at(o, sh, i), v);
	return 0;
}

static Py_ssize_t member_index(const Shape *sh, PyObject *name)
{
	Py_ssize_t i;

	for (i = 0; i < sh->n; i++)
		if (PyTuple_GET_ITEM(sh->names, i) == name)
			return i;
	for (i = 0; i < sh->n; i++) {
		int eq = PyUnicode_Compare(PyTuple_GET_ITEM(sh->names, i), name);

		if (eq == 0)
			return i;
		if (eq == -1 && PyErr_Occurred())
			return -2;
	}
	return -1;
}

static int no_member(PyObject *self, const Shape *sh, PyObject *name)
{
	PyObject *sep = PyUnicode_FromString(", ");
	PyObject *all = sep ? PyUnicode_Join(sep, sh->names) : NULL;

	if (all)
		PyErr_Format(PyExc_TypeError, "%s has no field %R (fields: %U)",
			     Py_TYPE(self)->tp_name, name, all);
	Py_XDECREF(sep);
	Py_XDECREF(all);
	return -1;
}

/* Cls(a, b) / Cls(a=1): positional values in field order, keywords by attribute name;
 * members not given take their default (zero). */
static int StructBase_init(PyObject *self, PyObject *args, PyObject *kw)
{
	Shape *sh = shape_of(Py_TYPE(self));
	Py_ssize_t i, nargs = PyTuple_GET_SIZE(args), pos = 0;
	char given_stack[64], *given = given_stack;
	PyObject *k, *v;
	int rc = -1;

	if (!sh) {
		if (nargs == 0 && (!kw || PyDict_GET_SIZE(kw) == 0))
			return 0;
		PyErr_Format(PyExc_TypeError, "%s has no fields", Py_TYPE(self)->tp_name);
		return -1;
	}
	if (nargs > sh->n) {
		PyErr_Format(PyExc_TypeError, "%s has %zd fields, got %zd positional values",
			     Py_TYPE(self)->tp_name, sh->n, nargs);
		goto out;
	}
	if (sh->n > (Py_ssize_t)sizeof(given_stack)) {
		given = PyMem_Calloc((size_t)sh->n, 1);
		if (!given) {
			PyErr_NoMemory();
			goto out;
		}
	} else {
		memset(given, 0, (size_t)sh->n);
	}
	for (i = 0; i < nargs; i++) {
		set_slot(self, sh, i, PyTuple_GET_ITEM(args, i));
		given[i] = 1;
	}
	if (kw) {
		while (PyDict_Next(kw, &pos, &k, &v)) {
			Py_ssize_t j = member_index(sh, k);

			if (j == -2)
				goto out;
			if (j < 0) {
				no_member(self, sh, k);
				goto out;
			}
			set_slot(self, sh, j, v);
			given[j] = 1;
		}
	}
	for (i = 0; i < sh->n; i++) {
		PyObject *f;

		if (given[i])
			continue;
		f = PyTuple_GET_ITEM(sh->factories, i);
		if (f == Py_None) {
			set_slot(self, sh, i, PyTuple_GET_ITEM(sh->defaults, i));
		} else {
			PyObject *d = PyObject_CallNoArgs(f);

			if (!d)
				goto out;
			Py_XSETREF(*slot_at(self, sh, i), d);
		}
	}
	rc = 0;
out:
	if (given && given != given_stack)
		PyMem_Free(given);
	Py_DECREF(sh);
	return rc;
}

/* Cls(...) for a generated struct class (its tp_vectorcall): an instance filled like
 * StructBase_init does, without building an args tuple and a keywords dict. */
static PyObject *StructBase_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf,
				       PyObject *kwnames)
{
	PyTypeObject *tp = (PyTypeObject *)callable;
	Shape *sh = shape_of(tp);
	Py_ssize_t i, nargs = PyVectorcall_NARGS(nargsf);
	Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
	char given[64] = {0};
	PyObject *o = NULL;

	if (!sh || sh->cls != tp || sh->n > (Py_ssize_t)sizeof(given)) {
		/* installed only on the shape's own class, with at most 64 members */
		PyErr_Format(PyExc_TypeError, "%s: its _shape was replaced", tp->tp_name);
		goto fail;
	}
	if (nargs > sh->n) {
		PyErr_Format(PyExc_TypeError, "%s has %zd fields, got %zd positional values",
			     tp->tp_name, sh->n, nargs);
		goto fail;
	}
	o = tp->tp_alloc(tp, 0);
	if (!o)
		goto fail;
	for (i = 0; i < nargs; i++) {
		set_slot(o, sh, i, args[i]);
		given[i] = 1;
	}
	for (i = 0; i < nkw; i++) {
		PyObject *k = PyTuple_GET_ITEM(kwnames, i);
		Py_ssize_t j = member_index(sh, k);

		if (j < 0) {
			if (j == -1)
				no_member(o, sh, k);
			goto fail;
		}
		set_slot(o, sh, j, args[nargs + i]);
		given[j] = 1;
	}
	for (i = 0; i < sh->n; i++) {
		PyObject *f;

		if (given[i])
			continue;
		f = PyTuple_GET_ITEM(sh->factories, i);
		if (f == Py_None) {
			set_slot(o, sh, i, PyTuple_GET_ITEM(sh->defaults, i));
		} else {
			PyObject *d = PyObject_CallNoArgs(f);

			if (!d)
				goto fail;
			Py_XSETREF(*slot_at(o, sh, i), d);
		}
	}
	Py_DECREF(sh);
	return o;
fail:
	Py_XDECREF(o);
	Py_XDECREF(sh);
	return NULL;
}

/* Whether two values of one class are equal, slot by slot (-1: an error). */
static int slots_equal(PyObject *a, PyObject *b, Shape *sh)
{
	Py_ssize_t i;

	for (i = 0; i < sh->n; i++) {
		PyObject *x = *slot_at(a, sh, i), *y = *slot_at(b, sh, i);
		int eq;

		if (!x || !y) {
			if (x != y)
				return 0;
			continue;
		}
		Py_INCREF(x);	/* an __eq__ may assign the slots meanwhile */
		Py_INCREF(y);
		eq = PyObject_RichCompareBool(x, y, Py_EQ);
		Py_DECREF(x);
		Py_DECREF(y);
		if (eq <= 0)
			return eq;
	}
	return 1;
}

/* a == b: the same class, member by member in C; another class: its _eq_other. */
static PyObject *StructBase_richcompare(PyObject *a, PyObject *b, int op)
{
	Shape *sh;
	PyObject *fn, *r;

	if (op != Py_EQ && op != Py_NE)
		Py_RETURN_NOTIMPLEMENTED;
	sh = shape_of(Py_TYPE(a));
	if (sh && Py_TYPE(b) == Py_TYPE(a)) {
		int eq = slots_equal(a, b, sh);

		Py_DECREF(sh);
		if (eq < 0)
			return NULL;
		return PyBool_FromLong(eq == (op == Py_EQ));
	}
	Py_XDECREF(sh);
	fn = _PyType_Lookup(Py_TYPE(a), eq_other_attr);
	if (!fn)
		Py_RETURN_NOTIMPLEMENTED;
	Py_INCREF(fn);
	r = PyObject_CallFunctionObjArgs(fn, a, b, NULL);
	Py_DECREF(fn);
	if (!r || r == Py_NotImplemented || op == Py_EQ)
		return r;
	{
		int t = PyObject_IsTrue(r);

		Py_DECREF(r);
		return t < 0 ? NULL : PyBool_FromLong(!t);
	}
}

PyTypeObject StructBaseType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "pybpf._fastpath.StructBase",
	.tp_doc = "Base of generated struct classes: __init__ and == in C (see _native/values.c).",
	.tp_basicsize = sizeof(PyObject),
	.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
	.tp_init = StructBase_init,
	.tp_richcompare = StructBase_richcompare,
};

int pybpf_values_module_init(PyObject *m)
{
	shape_attr = PyUnicode_InternFromString("_shape");
	eq_other_attr = PyUnicode_InternFromString("_eq_other");
	if (!shape_attr || !eq_other_attr)
		return -1;
	StructBaseType.tp_base = &PyBaseObject_Type;
	StructBaseType.tp_new = PyBaseObject_Type.tp_new;  /* object.__new__(cls) stays valid */
	if (PyType_Ready(&ShapeType) < 0 || PyType_Ready(&StructBaseType) < 0)
		return -1;
	Py_INCREF(&ShapeType);
	if (PyModule_AddObject(m, "Shape", (PyObject *)&ShapeType) < 0) {
		Py_DECREF(&ShapeType);
		return -1;
	}
	Py_INCREF(&StructBaseType);
	if (PyModule_AddObject(m, "StructBase", (PyObject *)&StructBaseType) < 0) {
		Py_DECREF(&StructBaseType);
		return -1;
	}
	return 0;
}
