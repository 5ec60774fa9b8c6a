#!/usr/bin/env python3
"""Run the kernel tests inside a qemu guest booting Debian's 6.1 kernel.

The guest has no disk image: a small busybox initramfs (built here, from the
installed packages) loads the virtio/9p modules, mounts this machine's root
filesystem read-only over 9p, puts fresh tmpfs/proc/sys/dev/tracefs/bpffs/
cgroup2/securityfs mounts on top, chroots into it and runs pytest from this
checkout with this machine's Python and libbpf. pytest's output streams over the
serial console; its exit status (and a copy of the output) come back through a
second, writable 9p share. The exit status of this script is pytest's.

Needs (installs nothing): ``apt-get install -y qemu-system-x86 linux-image-amd64
busybox-static``. Run as root (qemu reads /boot and shares /).

    python3 tests/vm/run_guest.py                  # the guest selection (GUEST_FILES, "guest")
    python3 tests/vm/run_guest.py --all            # every test marked kernel
    python3 tests/vm/run_guest.py -- -k kprobe -x  # extra pytest arguments
    python3 tests/vm/run_guest.py --probes         # boot, print the hook probes, power off
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import lzma
import os
import re
import resource
import selectors
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = "qemu-system-x86 linux-image-amd64 busybox-static"
# Modules the initramfs needs before the host root is mounted (the rest, e.g.
# veth or sch_ingress, the guest kernel loads itself from the shared root).
BOOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p"]
GUEST_CMDLINE = ("console=ttyS0 panic=-1 loglevel=4 lsm=lockdown,capability,bpf "
                 "mitigations=off nokaslr")
SENTINEL = "PYBPF-GUEST-EXIT="
# What runs in the guest by default: tests marked ``guest``, and every test of
# GUEST_FILES (tests/conftest.py marks them ``guest`` when PYBPF_GUEST_FILES names
# them): the areas where a second kernel finds what the host cannot -- hooks the
# host lacks, feature probes, CO-RE relocation of the shipped probes, event
# streams, map types, attach paths. ``--all`` runs every ``kernel`` test instead
# (about four times as long under TCG).
GUEST_FILES = [
    "test_guest_hooks.py", "test_features.py", "test_attach_kernel.py",
    "test_attach_trace.py", "test_attach_user.py", "test_tools_probes.py",
    "test_ringbuf.py", "test_perfbuf.py", "test_user_ringbuf.py", "test_typed_maps.py",
    "test_fastpath.py", "test_program_more.py", "test_mapkinds_more.py",
    "test_hooks_sections.py", "test_hooks_more.py", "test_hooks_uprobe_multi.py",
    "test_values_c.py", "test_maptypes.py",
    "test_hooks_tcx.py", "test_hooks_struct_ops.py",
]
GUEST_SELECTION = "guest and not slow"
ALL_SELECTION = "(kernel or guest) and not slow"
PROBES_SCRIPT = ("import pybpf.features as f\n"
                 "for name, h in f.summary()['hooks'].items():\n"
                 "    print(f\"{name:13} {'yes' if h['supported'] else 'no ':3}  {h['reason']}\")")


class SetupError(RuntimeError):
    """Something this machine lacks to boot the guest."""


# --- what is installed ---------------------------------------------------------------

def find_kernel(prefix: str, root: str = "/") -> tuple[str, str]:
    """(vmlinuz path, release) of the newest kernel installed in ROOT whose release starts
    with prefix."""
    found = []
    for path in glob.glob(os.path.join(root, f"boot/vmlinuz-{prefix}*")):
        release = os.path.basename(path)[len("vmlinuz-"):]
        if os.path.isdir(os.path.join(root, f"lib/modules/{release}")):
            found.append((tuple(int(x) for x in re.findall(r"\d+", release)), path, release))
    if not found:
        raise SetupError(f"no kernel /boot/vmlinuz-{prefix}* with modules in /lib/modules "
                         f"(apt-get install -y {PACKAGES})")
    _, path, release = max(found)
    return path, release


def find_busybox(root: str = "/") -> str:
    for path in (os.path.join(root, p) for p in ("bin/busybox", "usr/bin/busybox")):
        if os.path.exists(path):
            with open(path, "rb") as f:
                head = f.read(4096)
            # A static binary has no PT_INTERP: no "ld-linux" path in its first page.
            if b"ld-linux" not in head:
                return path
    raise SetupError(f"no static busybox in /bin (apt-get install -y {PACKAGES})")


def find_qemu() -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        raise SetupError(f"qemu-system-x86_64 not found (apt-get install -y {PACKAGES})")
    return path


def boot_modules(release: str, root: str = "/") -> list[str]:
    """Module files for BOOT_MODULES and their dependencies, in load order (asked of
    ROOT's own modprobe when ROOT is not /)."""
    order: list[str] = []
    chroot = [] if root == "/" else ["chroot", root]
    for mod in BOOT_MODULES:
        res = subprocess.run([*chroot, "modprobe", "-S", release, "--show-depends", mod],
                             capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise SetupError(f"modprobe -S {release} --show-depends {mod} failed: "
                             f"{res.stderr.strip()}")
        for line in res.stdout.splitlines():
            words = line.split()
            path = os.path.join(root, words[1].lstrip("/")) if words[:1] == ["insmod"] else ""
            if path and path not in order:
                order.append(path)
    return order


# --- initramfs -----------------------------------------------------------------------

class Cpio:
    """A newc ("070701") cpio archive, enough for an initramfs."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    def _entry(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0),
               ) -> None:
        fields = [self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1],
                  len(name) + 1, 0]
        self.ino += 1
        hdr = "070701" + "".join(f"{v:08x}" for v in fields)
        self.data += hdr.encode() + name.encode() + b"\0"
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, body)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.data += b"\0" * (-len(self.data) % 512)
        return bytes(self.data)


INIT = r"""#!/bin/busybox sh
# pybpf guest init (generated by tests/vm/run_guest.py)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "pybpf-guest: $*"; echo "@SENTINEL@125"; reboot -f; }
for m in @MODULES@; do insmod "/modules/$m" || fail "insmod $m failed"; done
R=/newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot $R \
    || fail "mounting the host root over 9p failed"
mount -t tmpfs -o mode=1777 tmpfs $R/tmp || fail "tmpfs on /tmp"
mount -t tmpfs -o mode=755 tmpfs $R/run
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t tracefs tracefs $R/sys/kernel/tracing
mount -t debugfs debugfs $R/sys/kernel/debug
mount -t securityfs securityfs $R/sys/kernel/security
mount -t bpf bpf $R/sys/fs/bpf
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
mkdir -p $R@OUT@
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000 pybpfout $R@OUT@ \
    || fail "mounting the output share failed"
# The checkout has a share of its own, mounted at its host path: a clone under
# /tmp (CI's, say) would otherwise be hidden by the guest's tmpfs on /tmp.
mkdir -p $R@REPO@ 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose pybpfrepo $R@REPO@ \
    || fail "mounting the checkout share failed"
umount /proc /sys /dev 2>/dev/null
# The root moves onto / (switch_root's way) before the chroot, so the chroot is the
# mount namespace's root: the kernel refuses new user namespaces to a chrooted process
# (the BPF token test makes one). chroot in PID 1 itself: kernel threads share its
# root, so the kernel's module autoloading (/sbin/modprobe for veth, sch_ingress...)
# finds the host's tools.
cd $R || fail "cd $R"
mount --move . / || fail "moving the root onto /"
exec chroot . /bin/sh @OUT@/stage2.sh
"""

STAGE2 = r"""#!/bin/sh
# Runs inside the guest, chrooted into the host's read-only root.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home TMPDIR=/tmp XDG_CACHE_HOME=/tmp/cache PYTHONDONTWRITEBYTECODE=1
export PYBPF_GUEST=1 TERM=dumb PYBPF_GUEST_FILES=@GUEST_FILES@
@ENV@
mkdir -p "$HOME" "$XDG_CACHE_HOME"
# The checkout is read-only here. Its build/ (test objects and binaries the host
# compiled) gets a tmpfs overlay so fixtures that cache into build/ can still write;
# writes vanish with the guest. Without overlayfs, test objects go to tmpfs instead.
B=@REPO@/build
mkdir -p /tmp/build-upper /tmp/build-work
if ! mount -t overlay overlay -o lowerdir=$B,upperdir=/tmp/build-upper,workdir=/tmp/build-work $B
then
    echo "pybpf-guest: no overlay on build/, test objects go to /tmp/test-bpf"
    export PYBPF_TEST_BPF_DIR=/tmp/test-bpf
    mkdir -p $PYBPF_TEST_BPF_DIR
    cp -p $B/test-bpf/*.bpf.o $PYBPF_TEST_BPF_DIR/ 2>/dev/null
fi
ip link set lo up 2>/dev/null || /bin/busybox ip link set lo up
# No udev here to make /dev/loop-control appear on first use: load loop up front.
modprobe -q loop 2>/dev/null
cd @REPO@
echo "pybpf-guest: kernel $(uname -r), $(nproc) cpus, lsm=$(cat /sys/kernel/security/lsm)," \
     "$(. /etc/os-release; echo "$PRETTY_NAME")"
start=$(date +%s)
{ @COMMAND@; echo $? > @OUT@/rc.tmp; } 2>&1 | tee @OUT@/output.log
rc=$(cat @OUT@/rc.tmp 2>/dev/null || echo 125)
echo "pybpf-guest: finished in $(( $(date +%s) - start ))s;" \
     "memory used/total MiB: $(free -m | awk '/^Mem:/ {print $3 "/" $2}')"
echo "$rc" > @OUT@/rc
sync
echo "@SENTINEL@$rc"
/bin/busybox reboot -f
"""


def build_initramfs(release: str, out_dir: str, busybox: str, root: str = "/") -> bytes:
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    with open(busybox, "rb") as f:
        cpio.file("bin/busybox", f.read(), 0o755)
    names = []
    for path in boot_modules(release, root):
        with open(path, "rb") as f:
            body = f.read()
        name = os.path.basename(path)
        if name.endswith(".xz"):
            body, name = lzma.decompress(body), name[:-3]
        elif not name.endswith(".ko"):
            raise SetupError(f"cannot unpack module {path} (only .ko and .ko.xz)")
        cpio.file(f"modules/{name}", body)
        names.append(name)
    init = (INIT.replace("@MODULES@", " ".join(names)).replace("@OUT@", out_dir)
            .replace("@REPO@", shlex.quote(str(REPO))).replace("@SENTINEL@", SENTINEL))
    cpio.file("init", init.encode(), 0o755)
    return cpio.finish()


# --- host-side preparation ---------------------------------------------------------------

def precompile_test_objects() -> None:
    """Compile tests/bpf/*.bpf.c into build/test-bpf on the host (the guest cannot write)."""
    spec = importlib.util.spec_from_file_location("_pybpf_conftest", REPO / "tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    conftest = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(REPO))
    spec.loader.exec_module(conftest)
    for src in sorted((REPO / "tests" / "bpf").glob("*.bpf.c")):
        name = src.name[:-len(".bpf.c")]
        try:
            conftest.compile_test_bpf(name)
        except Exception as exc:  # a source meant to fail compiles in its own test
            print(f"run_guest: tests/bpf/{src.name} not precompiled: "
                  f"{str(exc).splitlines()[0]}", file=sys.stderr)


def pytest_command(python: str, args: list[str]) -> str:
    # faulthandler_timeout: a test stuck for 3 minutes dumps every thread's stack.
    base = [python, "-m", "pytest", "-p", "no:cacheprovider", "-o", "console_output_style=classic",
            "-o", "faulthandler_timeout=180"]
    return shlex.join(base + args)


# --- boot --------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    root = os.path.realpath(args.root)
    kernel, release = find_kernel(args.kernel, root)
    busybox = find_busybox(root)
    qemu = find_qemu()
    python = args.python or os.path.realpath(sys.executable)
    env = ""
    if root != "/":
        # The guest's python has pybpf installed (a venv in ROOT): tests and their child
        # interpreters must import that one, not this checkout (cwd stays the checkout).
        env = "export PYTHONSAFEPATH=1"
        Path(root, str(REPO).lstrip("/")).mkdir(parents=True, exist_ok=True)  # mount point
    if not args.no_precompile:
        precompile_test_objects()

    if args.command:
        command = args.command.replace("python3", shlex.quote(python))
    elif args.probes:
        command = shlex.join([python, "-c", PROBES_SCRIPT])
    else:
        pytest_args = list(args.pytest_args)
        if not pytest_args or all(a.startswith("-") for a in pytest_args):
            marker = args.marker or (ALL_SELECTION if args.all else GUEST_SELECTION)
            pytest_args = ["-m", marker, "-v", "-rfEs", "--durations=15", *pytest_args,
                           "tests"]
        command = pytest_command(python, pytest_args)

    out_dir = tempfile.mkdtemp(prefix="pybpf-guest-", dir="/tmp")
    try:
        stage2 = (STAGE2.replace("@REPO@", shlex.quote(str(REPO))).replace("@OUT@", out_dir)
                  .replace("@COMMAND@", command)
                  .replace("@GUEST_FILES@", shlex.quote(" ".join(GUEST_FILES)))
                  .replace("@ENV@", env)
                  .replace("@SENTINEL@", SENTINEL))
        Path(out_dir, "stage2.sh").write_text(stage2)
        initrd = Path(out_dir, "initramfs.cpio")
        initrd.write_bytes(build_initramfs(release, out_dir, busybox, root))
        cmd = [qemu, "-nodefaults", "-no-user-config", "-accel", args.accel, "-cpu", args.cpu,
               "-smp", str(args.cpus), "-m", args.memory, "-display", "none",
               "-monitor", "none", "-serial", "stdio", "-no-reboot",
               "-kernel", kernel, "-initrd", str(initrd),
               "-append", GUEST_CMDLINE,
               "-virtfs", f"local,path={root},mount_tag=hostroot,security_model=none,"
                          "readonly=on,multidevs=remap",
               "-virtfs", f"local,path={out_dir},mount_tag=pybpfout,security_model=none",
               "-virtfs", f"local,path={REPO},mount_tag=pybpfrepo,security_model=none,"
                          "readonly=on,multidevs=remap"]
        print(f"run_guest: booting {kernel} under {args.accel} ({args.cpus} cpus, {args.memory}): "
              f"{command}", flush=True)
        start = time.monotonic()
        rc = _boot(cmd, args.timeout)
        elapsed = time.monotonic() - start
        rc_file = Path(out_dir, "rc")
        if rc_file.exists():
            rc = int(rc_file.read_text().strip() or 125)
        elif rc is None:
            print("run_guest: the guest stopped without reporting an exit status",
                  file=sys.stderr)
            rc = 125
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"run_guest: guest run took {elapsed:.0f}s (qemu used "
              f"{cpu.ru_utime + cpu.ru_stime:.0f}s of CPU), exit status {rc}", flush=True)
        if args.log:
            log = Path(out_dir, "output.log")
            if log.exists():
                shutil.copyfile(log, args.log)
        return rc
    finally:
        if not args.keep:
            shutil.rmtree(out_dir, ignore_errors=True)
        else:
            print(f"run_guest: kept {out_dir}")


def _boot(cmd: list[str], timeout: float) -> int | None:
    """Run qemu, echo the serial console, return the sentinel's status if seen."""
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    status: int | None = None
    buf = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                print(f"\nrun_guest: timed out after {timeout:.0f}s, stopping qemu",
                      file=sys.stderr)
                return 124
            if not sel.select(timeout=min(left, 5)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            sys.stdout.write(chunk.decode(errors="replace").replace("\r\n", "\n"))
            sys.stdout.flush()
            buf = (buf + chunk)[-4096:]
            m = re.search(SENTINEL.encode() + rb"(\d+)", buf)
            if m:
                status = int(m.group(1))
        proc.wait(timeout=30)
        if status is None:
            how = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit code {proc.returncode}")
            print(f"\nrun_guest: qemu ended ({how}) before the guest reported", file=sys.stderr)
        return status
    finally:
        sel.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", default="6.1", help="kernel release prefix in /boot (6.1)")
    ap.add_argument("--root", default="/",
                    help="the guest's userspace: this machine's / (default), or a root "
                         "directory with its own kernel in boot/ (tests/vm/debian13.py)")
    ap.add_argument("--python", help="the guest's interpreter, a path inside --root (default: "
                                     "this one)")
    ap.add_argument("--accel", default="tcg",
                    help="qemu accelerator (tcg: KVM hangs booting this kernel here)")
    ap.add_argument("--cpu", default="max", help="qemu -cpu model (max)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--memory", default="1G", help="guest RAM (1G)")
    ap.add_argument("--timeout", type=float, default=1200,
                    help="seconds before qemu is stopped (1200)")
    ap.add_argument("--marker", help="pytest -m expression when no test paths are given "
                                     f"(default {GUEST_SELECTION!r})")
    ap.add_argument("--all", action="store_true",
                    help=f"run every kernel test ({ALL_SELECTION!r})")
    ap.add_argument("--no-precompile", action="store_true",
                    help="do not compile tests/bpf/*.bpf.c on the host first")
    ap.add_argument("--probes", action="store_true",
                    help="only boot and print pybpf.features' hook probes")
    ap.add_argument("--command", help="run this shell command in the guest instead of pytest "
                                      "(\"python3\" is this interpreter)")
    ap.add_argument("--log", help="also copy pytest's output to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("run_guest: run as root (qemu shares / and the guest loads BPF as root)",
              file=sys.stderr)
        return 2
    try:
        return run(args)
    except SetupError as exc:
        print(f"run_guest: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
