/* SPDX-License-Identifier: Apache-2.0 */
/* pybpf's one owner of a kernel fd (or of any resource closed once): see fd.c. */
#ifndef PYBPF_NATIVE_FD_H
#define PYBPF_NATIVE_FD_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
	PyObject_HEAD
	int fd;			/* the owned fd; -1 once really closed (or for a non-fd resource) */
	int closed;		/* close() was called: every new borrow raises ClosedError */
	Py_ssize_t borrows;	/* users in flight (Python `with owner as fd`, readers, walks) */
	PyObject *what;		/* str naming the owner for messages: "map 'counts'" */
	PyObject *closer;	/* callable run once at the real close instead of close(fd) */
	PyObject *weakreflist;
} FDObject;

extern PyTypeObject FDType;

/* The fd of `o` for a call that holds the GIL from here to its syscall's return
 * (no borrow needed: close() needs the GIL too).  -1 with ClosedError set after
 * close(). */
int pybpf_fd_get(FDObject *o);

/* borrow()/release() from C, for a syscall made without the GIL: the fd (-1 with
 * ClosedError set after close()), then one pybpf_fd_release() (GIL held for both). */
int pybpf_fd_borrow(FDObject *o);
void pybpf_fd_release(FDObject *o);

/* Raise pybpf.errors.ClosedError(what); returns NULL. */
PyObject *pybpf_raise_closed(PyObject *what);

int pybpf_fd_module_init(PyObject *m);

#endif
