#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for pybpf: system packages, the
# bpffs/tracefs mounts, and pybpf itself (editable, with test extras).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PKGS=(clang-19 llvm-19 libbpf-dev bpftool cmake make gcc pkg-config libelf-dev zlib1g-dev
      systemtap-sdt-dev iproute2 util-linux procps passwd bash
      libbpf-tools)  # libbpf-tools: the C tools tests/test_conformance.py runs beside pybpf
# Debian's own python3 needs pip and headers to build the cffi extension; a
# python3 that already has pip (pyenv, a venv) is used as it is.
if ! python3 -m pip --version >/dev/null 2>&1; then
    PKGS+=(python3 python3-pip python3-dev python3-venv)
fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

PIP_FLAGS=(-q)
# Debian marks its python3 as externally managed (PEP 668). This script sets up
# a machine dedicated to pybpf, as root, so it installs into that python3 anyway.
if python3 -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
    PIP_FLAGS+=(--break-system-packages)
fi
python3 -m pip install "${PIP_FLAGS[@]}" -e '.[test]'
