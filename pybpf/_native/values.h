/* SPDX-License-Identifier: Apache-2.0 */
/* Struct values in C (StructBase, Shape): see values.c. */
#ifndef PYBPF_NATIVE_VALUES_H
#define PYBPF_NATIVE_VALUES_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

extern PyTypeObject StructBaseType;
extern PyTypeObject ShapeType;

int pybpf_values_module_init(PyObject *m);

#endif
