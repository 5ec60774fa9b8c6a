"""Prebuilt probes shipped with pybpf, each a Python API and a CLI command."""
