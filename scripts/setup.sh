#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (as root) for pybpf: system packages, the
# bpffs/tracefs mounts, and pybpf itself (editable, with test extras).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PKGS=(clang-19 llvm-19 libbpf-dev bpftool cmake make gcc pkg-config libelf-dev zlib1g-dev
      systemtap-sdt-dev iproute2 util-linux procps)
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

python3 -m pip install -q --upgrade pip >/dev/null 2>&1 || true
python3 -m pip install -q -e '.[test]'
