"""The rest of the hook families: kprobe_multi/kprobe sessions (fprobe), netkit, BPF
token, perf_event with a BPF cookie, iterators with parameters, and the probes: each
test fires the hook where the kernel has it and otherwise skips with the probe's
reason; a missing hook raises NotSupportedError carrying that reason.
"""

from __future__ import annotations

import os
import threading

import pytest
from attach_util import hits, val
from conftest import require
from hooks_util import KMULTI, KRET, KSESS, PERF_COOKIE, assert_route, set_target

import pybpf
from pybpf import features

pytestmark = pytest.mark.kernel


@pytest.fixture
def hooks(bpf_obj):
    def open_with(*names: str) -> pybpf.Object:
        o = pybpf.Object.open(bpf_obj("hooks"))
        for p in o.programs.values():
            p.autoload = p.name in names
        o.load()
        set_target(o, os.getpid())
        opened.append(o)
        return o

    opened: list[pybpf.Object] = []
    yield open_with
    for o in opened:
        o.close()


def getpgid_n(n: int) -> None:
    for _ in range(n):
        os.getpgid(0)


@pytest.mark.parametrize("prog,hook,probe", [("kmulti", KMULTI, "kprobe_multi"),
                                             ("kret", KRET, "kprobe_multi"),
                                             ("ksess", KSESS, "kprobe_session")])
def test_kprobe_multi_pattern_with_cookies(hooks, prog, hook, probe):
    require(getattr(features, probe)())
    obj = hooks(prog)
    link = obj.programs[prog].attach_kprobe_multi("*sys_getpgid")
    assert all(n.endswith("sys_getpgid") for n in link.functions)
    if prog == "ksess":  # libbpf before 1.5 cannot make sessions: always pybpf's
        assert link.via.startswith("bpf_link_create(")
    else:
        assert_route(link, "bpf_program__attach_kprobe_multi_opts")
    link.detach()
    # the syscall's entry point (__x64_sys_getpgid, __arm64_sys_getpgid...): once a call
    entry = [n for n in link.functions if n.startswith("__") and "ia32" not in n
             and n.endswith("_sys_getpgid") and not n.startswith(("__se", "__do"))]
    assert len(entry) == 1, link.functions
    obj.programs[prog].attach_kprobe_multi(entry, cookies={entry[0]: 77})
    getpgid_n(6)
    # a session program returning 0 runs at entry and at return
    assert hits(obj, hook, 77) == (12 if prog == "ksess" else 6)


def test_kprobe_multi_auto_attach_from_section(hooks):
    require(features.kprobe_multi())
    obj = hooks("kmulti")
    with pytest.raises(pybpf.AttachError, match="names no target to auto-attach"):
        obj.programs["kmulti"].attach()  # bare SEC("kprobe.multi")


def test_missing_hook_raises_not_supported_with_probe_reason(hooks):
    """Whichever multi-probe hook this kernel lacks: the attach says why, in the probe's
    words (skips only on a kernel that has them all)."""
    missing = [(p, f) for p, f in (("kmulti", features.kprobe_multi()),
                                   ("ksess", features.kprobe_session())) if not f]
    if not missing:
        pytest.skip("the kernel has kprobe_multi and kprobe sessions")
    for prog, feat in missing:
        obj = hooks(prog)
        with pytest.raises(pybpf.NotSupportedError) as ei:
            obj.programs[prog].attach_kprobe_multi("do_sys_openat2")
        assert feat.reason in str(ei.value)


def test_netkit_missing_says_why(hooks):
    feat = features.netkit()
    if feat:
        pytest.skip("the kernel has netkit (covered by a device test where ip can make one)")
    obj = hooks("nk_primary")
    with pytest.raises(pybpf.NotSupportedError, match="netkit"):
        obj.programs["nk_primary"].attach_netkit("lo")


def test_perf_event_cookie(hooks):
    obj = hooks("perf_cookie")
    link = obj.programs["perf_cookie"].attach_perf_event(pid=os.getpid(), frequency=1000,
                                                         cookie=0xC0FFEE)
    stop = threading.Event()

    def spin() -> None:
        x = 0
        while not stop.is_set():
            x += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        from attach_util import wait_for

        assert wait_for(lambda: val(obj, PERF_COOKIE, 0) is not None, timeout=5)
    finally:
        stop.set()
        t.join()
    assert val(obj, PERF_COOKIE, 0) == 0xC0FFEE
    link.detach()


def test_task_iterator_with_pid_parameter(hooks):
    obj = hooks("task_tids")
    everyone = obj.programs["task_tids"].attach_iter().read().decode().split("\n")
    tgids = {int(line.split()[0]) for line in everyone if line}
    assert len(tgids) > 1 and os.getpid() in tgids
    mine = obj.programs["task_tids"].attach_iter(pid=os.getpid()).read().decode()
    rows = [tuple(map(int, line.split())) for line in mine.splitlines()]
    assert rows and {tg for tg, _ in rows} == {os.getpid()}
    assert {tid for _, tid in rows} == {int(t) for t in os.listdir("/proc/self/task")}
    one = obj.programs["task_tids"].attach_iter(tid=os.getpid()).read().decode()
    assert [tuple(map(int, line.split())) for line in one.splitlines()] == \
        [(os.getpid(), os.getpid())]


def test_cgroup_iterator_with_cgroup_and_order(hooks):
    """iter/cgroup walks the cgroup it is given, in the order it is given (the ids are
    the cgroup directories' inode numbers)."""
    from attach_util import new_cgroup

    obj = hooks("cgroup_ids")
    prog = obj.programs["cgroup_ids"]
    with new_cgroup() as parent:
        kids = [os.path.join(parent, n) for n in ("k1", "k2")]
        for k in kids:
            os.mkdir(k)
        try:
            ino = {p: os.stat(p).st_ino for p in [parent, *kids]}

            def walk(cg, order):  # type: ignore[no-untyped-def]
                return [int(x) for x in prog.attach_iter(cgroup=cg, order=order).read().split()]

            assert walk(parent, "self") == [ino[parent]]
            pre = walk(parent, "descendants_pre")
            assert pre[0] == ino[parent] and sorted(pre) == sorted(ino.values())
            post = walk(parent, "descendants_post")
            assert post[-1] == ino[parent] and sorted(post) == sorted(ino.values())
            up = walk(kids[0], "ancestors_up")
            assert up[:2] == [ino[kids[0]], ino[parent]]
            fd = os.open(kids[1], os.O_RDONLY | os.O_DIRECTORY)
            try:
                assert walk(fd, "self") == [ino[kids[1]]]
            finally:
                os.close(fd)
            with pytest.raises(ValueError, match="order"):
                prog.attach_iter(cgroup=parent, order="sideways")
        finally:
            for k in kids:
                os.rmdir(k)


def test_probes_agree_with_the_kernel():
    assert features.program_types()["tracing"] == bool(features.tp_btf())
    for f in features.hooks():
        assert f.reason, f
    summary = features.summary()["hooks"]
    assert "tp_btf" in summary and "netfilter" in summary and "token" in summary


TOKEN_CHILD = r"""
import ctypes, socket
import pybpf

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_move_mount, SYS_fsopen, SYS_fsconfig, SYS_fsmount = 429, 430, 431, 432
FSCONFIG_SET_STRING, FSCONFIG_CMD_CREATE, MOVE_MOUNT_F_EMPTY_PATH = 1, 6, 4
CLONE_NEWNS, CLONE_NEWUSER, MS_REC, MS_PRIVATE = 0x20000, 0x10000000, 0x4000, 1 << 18


def sys_(nr, *args):
    rc = libc.syscall(nr, *args)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syscall {nr}: {os.strerror(err)}")
    return rc


def unshare(flags):
    if libc.unshare(flags) < 0:
        raise OSError(ctypes.get_errno(), f"unshare({flags:#x})")


def try_load(token_path):
    # LIBBPF_BPF_TOKEN_PATH: "" forbids a token, a path makes it mandatory (libbpf 1.4+)
    os.environ["LIBBPF_BPF_TOKEN_PATH"] = token_path
    obj = pybpf.Object.open(P["obj"])
    try:
        obj.rodata.neg_default = -7
        obj.load()
        run = obj.programs["xdp_pass"].test_run(bytes(64))
        return {"ok": True, "retval": run.retval, "neg_seen": obj.bss.neg_seen}
    except pybpf.BPFError as exc:
        return {"ok": False, "errno": exc.errno, "type": type(exc).__name__,
                "text": str(exc)[:300]}
    finally:
        obj.close()


parent_sock, child_sock = socket.socketpair()
pid = os.fork()
if pid == 0:  # the unprivileged side: a new user and mount namespace
    out = {}
    try:
        parent_sock.close()
        try:
            unshare(CLONE_NEWUSER)
        except OSError as exc:  # e.g. EPERM in a chroot: the kernel's rule, not pybpf's
            out["userns_refused"] = os.strerror(exc.errno)
            raise
        with open("/proc/self/uid_map", "w") as f:
            f.write("0 0 1")
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/gid_map", "w") as f:
            f.write("0 0 1")
        unshare(CLONE_NEWNS)
        if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) < 0:
            raise OSError(ctypes.get_errno(), "mount --make-rprivate /")
        out["without_token"] = try_load("")
        fs_fd = sys_(SYS_fsopen, b"bpf", 0)  # a bpffs owned by this user namespace
        socket.send_fds(child_sock, [b"fs"], [fs_fd])
        _, fds, _, _ = socket.recv_fds(child_sock, 16, 1)
        sys_(SYS_move_mount, fds[0], b"", -100, P["mnt"].encode(), MOVE_MOUNT_F_EMPTY_PATH)
        out["with_token"] = try_load(P["mnt"])
    except BaseException as exc:
        out["child_error"] = repr(exc)
    child_sock.sendall(json.dumps(out).encode())
    child_sock.close()
    os._exit(0)

# the privileged side: delegate everything on the child's bpffs, mount it, hand it over
child_sock.close()
data, fds, _, _ = socket.recv_fds(parent_sock, 65536, 1)
if not fds:  # the child failed before fsopen: its verdict follows
    while chunk := parent_sock.recv(65536):
        data += chunk
    os.waitpid(pid, 0)
    emit(json.loads(data))
    sys.exit(0)
for opt in ("delegate_cmds", "delegate_maps", "delegate_progs", "delegate_attachs"):
    sys_(SYS_fsconfig, fds[0], FSCONFIG_SET_STRING, opt.encode(), b"0xffffffffffffffff", 0)
sys_(SYS_fsconfig, fds[0], FSCONFIG_CMD_CREATE, None, None, 0)
mnt_fd = sys_(SYS_fsmount, fds[0], 0, 0)
socket.send_fds(parent_sock, [b"mnt"], [mnt_fd])
data = b""
while chunk := parent_sock.recv(65536):
    data += chunk
os.waitpid(pid, 0)
emit(json.loads(data))
"""


def test_bpf_token_unprivileged_load_through_delegated_bpffs(bpf_obj, tmp_path):
    """BPF token (kernel 6.9+, libbpf 1.4+): a process in a new user namespace, with no
    capability in the initial one, cannot load an object; once a privileged parent has
    mounted for it a bpffs delegating commands, maps, programs and attach types (fsopen
    in the child's namespace, fsconfig + fsmount in the parent's, the mount fd passed
    over a socket, as the kernel selftests do), libbpf derives a token from it
    (LIBBPF_BPF_TOKEN_PATH) and the same load succeeds: the program runs and the
    .rodata value set before load is what it saw. Elsewhere: the probe's reason."""
    feat = features.token()
    if not feat:
        assert ("libbpf" in feat.reason and "too old" in feat.reason) or \
            "kernel has no BPF tokens" in feat.reason
        pytest.skip(f"token: {feat.reason}")
    from _child import run_child

    mnt = tmp_path / "bpffs"
    mnt.mkdir()
    got = run_child(TOKEN_CHILD, timeout=120, what="token child",
                    params={"obj": bpf_obj("basic"), "mnt": str(mnt)})
    if "userns_refused" in got:
        pytest.skip("token: this process cannot make a user namespace (unshare(CLONE_NEWUSER)"
                    f": {got['userns_refused']}; the kernel refuses it to a chrooted process)")
    assert "child_error" not in got, got
    assert got["without_token"]["ok"] is False, got
    assert got["without_token"]["errno"] in (1, 13), got  # EPERM/EACCES: unprivileged
    assert got["with_token"] == {"ok": True, "retval": 2, "neg_seen": -7}, got


def test_netkit_pair_counts_both_directions(hooks):
    """netkit primary in netns A, peer in netns B (made with ip, where the kernel and
    iproute2 have netkit): both programs attach to the primary and count datagrams."""
    require(features.netkit())
    import socket
    import subprocess

    from attach_util import in_netns, run, unique, wait_for

    obj = hooks("nk_primary", "nk_peer")
    ns_a, ns_b, dev_a, dev_b = unique("pynka"), unique("pynkb"), unique("nka")[:15], \
        unique("nkb")[:15]
    try:
        for ns in (ns_a, ns_b):
            run("ip", "netns", "add", ns)
        made = subprocess.run(["ip", "-n", ns_a, "link", "add", dev_a, "type", "netkit",
                               "peer", "name", dev_b], capture_output=True, text=True)
        if made.returncode:
            pytest.skip(f"ip cannot create a netkit device: {made.stderr.strip()}")
        run("ip", "-n", ns_a, "link", "set", dev_b, "netns", ns_b)
        for ns, dev, addr in ((ns_a, dev_a, "10.78.0.1"), (ns_b, dev_b, "10.78.0.2")):
            run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        with in_netns(ns_a):
            primary = obj.programs["nk_primary"].attach(ifname=dev_a)
            peer = obj.programs["nk_peer"].attach_netkit(dev_a, "peer")
        assert primary.info().type == "netkit" and peer.target.startswith("netkit ")
        assert_route(primary, "bpf_program__attach_netkit")
        assert_route(peer, "bpf_program__attach_netkit")
        with in_netns(ns_a):
            rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rx.bind(("10.78.0.1", 0))
            port = rx.getsockname()[1]
        with in_netns(ns_b):
            tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(5):
            tx.sendto(b"nk", ("10.78.0.1", port))
        rx.settimeout(2)
        for _ in range(5):
            rx.recv(16)
        set_target(obj, 0)
        assert wait_for(lambda: hits(obj, 60, 0) + hits(obj, 60, 1) >= 5)
        tx.close()
        rx.close()
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
