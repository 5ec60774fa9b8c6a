"""Exporters (issue 15): maps as Prometheus metrics scraped over real HTTP, events and
metrics as OTLP to a receiver inside the test, JSON lines with wall-clock times and the
host's identity, counted drops under a slow collector, and the extras' errors.

Every command runs as a child process (a crash fails one test). Expected values come
from what the test did: the children it started (exec counts by comm), the write(2)s
it made to its own /dev/null fd, each on a chosen CPU (sizes, per-CPU sums, the log2
slots computed here), and the wall clock read around each write.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

# The exporters' libraries come with the test extra (scripts/setup.sh installs it); a
# userspace without them (the Debian 13 guest's offline venv) skips this module.
prometheus_parser = pytest.importorskip(
    "prometheus_client.parser", reason="prometheus-client (pybpf[test] extra) not installed")
pytest.importorskip("opentelemetry.proto",
                    reason="opentelemetry-proto (pybpf[test] extra) not installed")

from _child import readline, run_child  # noqa: E402
from _otlp_receiver import Receiver, attrs  # noqa: E402
from conftest import compile_test_bpf  # noqa: E402

pytestmark = pytest.mark.kernel

ROOT = Path(__file__).resolve().parent.parent
SIZES = [1, 2, 3, 100, 1000, 5000, 70000]
EXECS = [["/bin/true"]] * 3 + [["/bin/echo", "x"]] * 2


def slot(v: int) -> int:
    return max(v.bit_length() - 1, 0)


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))


def start(args: list[str], ready: str) -> tuple[subprocess.Popen[str], str, list[str]]:
    """``python3 -m pybpf ARGS``; read stderr until a line containing ``ready``; return
    the process, the Prometheus URL it announced (or "") and the lines read."""
    p = subprocess.Popen([sys.executable, "-m", "pybpf", *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env())
    url, lines = "", []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = readline(p, p.stderr)
        lines.append(line)
        if "Prometheus metrics on " in line:
            url = line.split(" on ", 1)[1].strip()
        if ready in line or not line:
            break
    if not lines or ready not in lines[-1]:
        p.kill()
        out, err = p.communicate(timeout=120)
        pytest.fail(f"{args[0]} did not start: {''.join(lines)}{err}")
    return p, url, lines


def stop(p: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.communicate(timeout=timeout)
    except BaseException:
        p.kill()
        p.communicate(timeout=120)
        raise


def do_writes(fd: int) -> list[tuple[int, int]]:
    """One write of each size, CPUs taken in turn; the wall clock around each."""
    cpus = sorted(os.sched_getaffinity(0))
    spans = []
    try:
        for i, size in enumerate(SIZES):
            os.sched_setaffinity(0, {cpus[i % len(cpus)]})
            t0 = time.time_ns()
            os.write(fd, b"x" * size)
            spans.append((t0, time.time_ns()))
    finally:
        os.sched_setaffinity(0, cpus)
    return spans


def do_execs() -> None:
    for argv in EXECS:
        subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)


def scrape(url: str) -> dict[str, Any]:
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    return {f.name: f for f in prometheus_parser.text_string_to_metric_families(text)}


def expected_slots(n: int) -> list[int]:
    slots = [0] * n
    for s in SIZES:
        slots[min(slot(s), n - 1)] += 1
    return slots


@pytest.fixture
def run_args(tmp_path):
    obj = compile_test_bpf("export_metrics")
    fd = os.open("/dev/null", os.O_WRONLY)
    me = os.getpid()
    yield fd, [obj, "--set", f"targ_ppid={me}", "--set", f"targ_pid={me}",
               "--set", f"targ_fd={fd}"]
    os.close(fd)


def test_run_prometheus_scrape_equals_kernel_counts(run_args):
    fd, args = run_args
    p, url, _ = start(["run", *args, "--prometheus", "127.0.0.1:0"], "attached")
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics"), url
        do_execs()
        do_writes(fd)
        deadline = time.monotonic() + 10
        while True:  # the ring's reader counts the events it read
            fams = scrape(url)
            ev = {s.labels["event"]: s.value for s in fams["pybpf_events"].samples
                  if s.name == "pybpf_events_total"}
            if ev.get("events") == len(SIZES) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        out, err = stop(p)
    assert p.returncode == 0, err
    assert ev == {"events": len(SIZES)}
    cls = "ROOT_UID" if os.getuid() == 0 else "USER_UID"
    execs = fams["pybpf_export_metrics_exec_counts"]
    assert execs.type == "counter"
    assert {(s.labels["comm"], s.labels["cls"]): s.value for s in execs.samples
            if s.name.endswith("_total")} == {("true", cls): 3, ("echo", cls): 2}
    # per-CPU: the writes were made on every CPU in turn; the metric is their sum
    calls = fams["pybpf_export_metrics_write_calls"]
    assert [(s.labels, s.value) for s in calls.samples if s.name.endswith("_total")] == \
        [({"key": "0"}, len(SIZES))]
    bss = fams["pybpf_export_metrics_bss_total_writes"]
    assert [s.value for s in bss.samples if s.name.endswith("_total")] == [len(SIZES)]
    # the hash map's struct hist {slots[24]; sum}: a histogram keyed by fd, exact _sum
    hist = fams["pybpf_export_metrics_write_hist_slots"]
    assert hist.type == "histogram"
    by = {(s.name, s.labels.get("le")): s.value for s in hist.samples
          if s.labels["key"] == str(fd)}
    want = expected_slots(24)
    cum = 0
    for i, n in enumerate(want):
        cum += n
        assert by[("pybpf_export_metrics_write_hist_slots_bucket", str(float(2 ** (i + 1) - 1)))] \
            == cum, i
    assert by[("pybpf_export_metrics_write_hist_slots_bucket", "+Inf")] == len(SIZES)
    assert by[("pybpf_export_metrics_write_hist_slots_count", None)] == len(SIZES)
    assert by[("pybpf_export_metrics_write_hist_slots_sum", None)] == sum(SIZES)
    # the array map (slot = key) with no sum: the documented lower bound
    arr = fams["pybpf_export_metrics_size_hist"]
    got = {(s.name.rsplit("_", 1)[1], s.labels.get("le")): s.value for s in arr.samples}
    assert got[("count", None)] == len(SIZES)
    assert got[("sum", None)] == sum(2 ** slot(s) for s in SIZES)
    assert got[("bucket", "7.0")] == sum(1 for s in SIZES if s <= 7)


def test_run_otlp_logs_and_metrics(run_args):
    fd, args = run_args
    with Receiver() as rx:
        p, _, _ = start(["run", *args, "--otlp", rx.endpoint, "--json"], "attached")
        try:
            do_execs()
            spans = do_writes(fd)
            deadline = time.monotonic() + 10
            while len(rx.log_records()) < len(SIZES) and time.monotonic() < deadline:
                time.sleep(0.1)  # the batch goes out within a second
        finally:
            out, err = stop(p)
        assert p.returncode == 0, err
        logs = rx.log_records()
        metrics = rx.metrics()
    assert len(logs) == len(SIZES), err
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    comm = open(f"/proc/{os.getpid()}/comm").read().strip()
    cls = "ROOT_UID" if os.getuid() == 0 else "USER_UID"
    for (res, rec), size, (t0, t1) in zip(logs, SIZES, spans):
        assert res["host.name"] == socket.gethostname()
        assert res["host.boot_id"] == boot
        assert res["os.version"] == os.uname().release
        assert res["service.name"] == "export_metrics"
        a = attrs(rec.attributes)
        assert (a["pid"], a["fd"], a["size"], a["comm"], a["cls"]) == \
            (os.getpid(), fd, size, comm, cls)
        assert rec.body.string_value == "events"
        # the kernel's CLOCK_MONOTONIC stamp, as wall-clock: inside the write's span
        assert t0 - 2_000_000 <= rec.time_unix_nano <= t1 + 2_000_000, (t0, rec, t1)
        assert rec.observed_time_unix_nano >= rec.time_unix_nano
    # the JSON lines carry the same fields and times
    lines = [json.loads(x) for x in out.splitlines() if x.startswith('{"map"')]
    assert [x["event"]["size"] for x in lines] == SIZES
    for x, (_, rec) in zip(lines, logs):
        assert x["time_unix_nano"] == rec.time_unix_nano
        assert x["host.boot_id"] == boot and x["os.version"] == os.uname().release
    # the maps as OTLP metrics, sent at least once (at exit)
    last: dict[str, Any] = {}
    for res, m in metrics:
        assert res["host.boot_id"] == boot
        last[m.name] = m
    h = last["pybpf_export_metrics_write_hist_slots"].histogram
    (dp,) = [d for d in h.data_points if attrs(d.attributes) == {"key": str(fd)}]
    assert dp.count == len(SIZES) and dp.sum == sum(SIZES)
    assert list(dp.bucket_counts) == expected_slots(24) + [0]
    assert list(dp.explicit_bounds) == [float(2 ** (i + 1) - 1) for i in range(24)]
    s = last["pybpf_export_metrics_exec_counts"].sum
    assert s.is_monotonic
    assert sorted((attrs(d.attributes)["comm"], d.as_int or d.as_double)
                  for d in s.data_points) == [("echo", 2), ("true", 3)]


def test_execsnoop_json_otlp_and_prometheus():
    """A shipped tool with both flags: its own children's execs as JSON lines, OTLP logs
    (argv as a list, wall-clock times) and a count on /metrics."""
    with Receiver() as rx:
        p, url, _ = start(["execsnoop", "--json", "--otlp", rx.endpoint, "--prometheus",
                           "127.0.0.1:0"], "Hit Ctrl-C")
        try:
            t0 = time.time_ns()
            kids = []
            for argv in EXECS:
                c = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
                c.wait()
                kids.append(c.pid)
            t1 = time.time_ns()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                mine = [(r, rec) for r, rec in rx.log_records()
                        if attrs(rec.attributes).get("pid") in kids]
                if len(mine) == len(kids):
                    break
                time.sleep(0.1)
            fams = scrape(url)
        finally:
            out, err = stop(p)
    assert p.returncode == 0, err
    evs = {e["pid"]: e for e in map(json.loads, out.splitlines()) if e["pid"] in kids}
    assert sorted(evs) == sorted(kids)
    for pid, argv in zip(kids, EXECS):
        e = evs[pid]
        assert e["argv"] == argv and e["ppid"] == os.getpid()
        assert t0 - 2_000_000 <= e["time_unix_nano"] <= t1 + 2_000_000
        assert e["host.name"] == socket.gethostname()
    assert len(mine) == len(kids)
    for res, rec in mine:
        a = attrs(rec.attributes)
        assert a["argv"] == evs[a["pid"]]["argv"]
        assert rec.time_unix_nano == evs[a["pid"]]["time_unix_nano"]
        assert res["service.name"] == "execsnoop"
    n = {s.labels["event"]: s.value for s in fams["pybpf_events"].samples}
    assert n["exec"] >= len(kids)
    assert "pybpf_execsnoop_pybpf_ringbuf_drops" in fams


def test_slow_collector_costs_counted_drops_not_memory():
    """A collector that takes 0.5 s per request: the queue stays bounded, every event is
    sent, dropped or failed, and the receiver got exactly the sent ones."""
    with Receiver(delay=0.5) as rx:
        r = run_child("""
            from pybpf.export.events import OTLPLogs
            logs = OTLPLogs(P["endpoint"], {"host.name": "t"}, max_queue=50, batch=10,
                            interval=0.05, timeout=5)
            accepted, peak = 0, 0
            for i in range(500):
                accepted += logs.emit("e", {"i": i}, time.time_ns())
                peak = max(peak, logs.queued)
            dropped_before_close = logs.dropped
            logs.close(timeout=30)
            emit({"accepted": accepted, "peak": peak, "dropped": logs.dropped,
                  "sent": logs.sent, "failed": logs.failed, "early": dropped_before_close})
        """, params={"endpoint": rx.endpoint}, timeout=60)
        got = sum(len(rec.log_records) for req in rx.of("/v1/logs")
                  for rl in req.resource_logs for rec in rl.scope_logs)
    assert r["peak"] <= 50
    assert r["early"] == 500 - r["accepted"] and r["early"] > 0
    assert r["sent"] + r["failed"] + r["dropped"] == 500
    assert r["sent"] == got and r["sent"] > 0


def test_absent_collector_counts_failures():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_child("""
        from pybpf.export.events import OTLPLogs
        logs = OTLPLogs(P["endpoint"], {}, max_queue=20, batch=10, interval=0.05,
                        timeout=1)
        for i in range(30):
            logs.emit("e", {"i": i}, time.time_ns())
        logs.close(timeout=20)
        emit({"dropped": logs.dropped, "sent": logs.sent, "failed": logs.failed})
    """, params={"endpoint": f"http://127.0.0.1:{port}"}, timeout=60)
    assert r["sent"] == 0 and r["failed"] > 0
    assert r["failed"] + r["dropped"] == 30


def test_core_import_needs_no_extra_and_flags_name_the_extra(run_args):
    _, args = run_args
    r = run_child("""
        import pybpf, pybpf.export, pybpf.cli, pybpf.tools.execsnoop, pybpf.tools.audit
        emit(sorted(m for m in sys.modules
                    if m.startswith(("prometheus_client", "opentelemetry"))))
    """)
    assert r == []
    for flag, value, extra in (("--prometheus", "127.0.0.1:0", "prometheus"),
                               ("--otlp", "http://127.0.0.1:1", "otel")):
        for cmd in (["run", *args], ["execsnoop"]):
            code = ("import sys\n"
                    "for m in ('prometheus_client', 'opentelemetry'):\n"
                    "    sys.modules[m] = None\n"
                    "from pybpf.cli import main\n"
                    f"sys.exit(main({[*cmd, flag, value]!r}))\n")
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env=env(), timeout=60)
            assert p.returncode == 1, p.stderr
            assert f"pip install 'pybpf[{extra}]'" in p.stderr, p.stderr
            assert "Traceback" not in p.stderr


def test_bad_prometheus_address(run_args):
    _, args = run_args
    p = subprocess.run([sys.executable, "-m", "pybpf", "run", *args, "--prometheus", "9435"],
                       capture_output=True, text=True, env=env(), timeout=60)
    assert p.returncode == 1 and "ADDR:PORT" in p.stderr, p.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "pybpf", "run", *args, "--prometheus",
                            f"127.0.0.1:{port}"], capture_output=True, text=True, env=env(),
                           timeout=60)
    assert p.returncode == 1 and "cannot listen" in p.stderr, p.stderr


# --- pprof ----------------------------------------------------------------------------
def _fields(data: bytes) -> dict[int, list[Any]]:
    """A protobuf message's fields (varints as int, length-delimited as bytes): an
    independent reader of the wire format for checking pybpf's writer."""
    out: dict[int, list[Any]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        n = shift = 0
        while True:
            b = data[i]
            i += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return n

    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            out.setdefault(field, []).append(varint())
        elif wire == 2:
            n = varint()
            out.setdefault(field, []).append(data[i:i + n])
            i += n
        else:
            raise AssertionError(f"unexpected wire type {wire}")
    return out


def _packed_ints(b: bytes) -> list[int]:
    vals, i = [], 0
    while i < len(b):
        n = shift = 0
        while True:
            c = b[i]
            i += 1
            n |= (c & 0x7F) << shift
            shift += 7
            if not c & 0x80:
                break
        vals.append(n)
    return vals


def test_profile_pprof_matches_folded(tmp_path):
    import gzip

    def cpu_seconds(pid: int) -> float:  # utime + stime from /proc/PID/stat
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    out_pb = tmp_path / "cpu.pb.gz"
    try:
        ran = cpu_seconds(busy.pid)
        p = subprocess.run([sys.executable, "-m", "pybpf", "profile", "--pid", str(busy.pid),
                            "-F", "499", "--duration", "2", "--folded", "--pprof", str(out_pb)],
                           capture_output=True, text=True, env=env(), timeout=120)
        ran = cpu_seconds(busy.pid) - ran  # CPU time the burner got while profile ran
    finally:
        busy.kill()
        busy.wait()
    assert p.returncode == 0, p.stderr
    folded: dict[str, int] = {}
    for line in p.stdout.splitlines():
        stack, _, n = line.rpartition(" ")
        folded[stack] = folded.get(stack, 0) + int(n)
    # cpu-clock samples at 499 Hz of the burner's CPU time: what it got is what the
    # kernel scheduler gave it (a full CPU on a quiet machine, a seventh of one under
    # load 14 on 2 cores), not 2 s. The 2 s window is part of profile's run (start-up
    # and output around it): a wide margin below, and never more than it ran.
    n_samples = sum(folded.values())
    assert 10 <= n_samples and 0.1 * ran * 499 <= n_samples <= 1.5 * ran * 499 + 20, \
        (n_samples, ran)
    prof = _fields(gzip.decompress(out_pb.read_bytes()))
    strings = [b.decode() for b in prof[6]]
    assert strings[0] == ""
    types = [_fields(vt) for vt in prof[1]]
    assert [(strings[t[1][0]], strings[t[2][0]]) for t in types] == \
        [("samples", "count"), ("cpu", "nanoseconds")]
    period = prof[12][0]
    assert period == 10**9 // 499
    funcs = {f[1][0]: strings[f[2][0]] for f in map(_fields, prof[5])}
    locs = {}
    for loc in map(_fields, prof[4]):
        (line,) = loc[4]
        locs[loc[1][0]] = funcs[_fields(line)[1][0]]
    rebuilt: dict[str, int] = {}
    for smp in map(_fields, prof[2]):
        ids = _packed_ints(smp[1][0])
        count, cpu_ns = _packed_ints(smp[2][0])
        assert cpu_ns == count * period
        labels = {strings[lb[1][0]]: (lb.get(3, [None])[0] if 3 in lb else strings[lb[2][0]])
                  for lb in map(_fields, smp[3])}
        assert labels["pid"] == busy.pid
        stack = ";".join(locs[i] for i in reversed(ids))  # root (comm) first, as folded
        rebuilt[stack] = rebuilt.get(stack, 0) + count
    assert rebuilt == folded
    assert prof[10][0] >= 1_900_000_000  # duration_nanos
    assert abs(prof[9][0] - time.time_ns()) < 120 * 10**9  # time_nanos: wall clock


# --- agent ----------------------------------------------------------------------------
class _Lines:
    """A child's stderr, read by a thread; :meth:`wait` for a line containing text."""

    def __init__(self, stream: Any) -> None:
        import threading

        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    def wait(self, text: str, start: int = 0, timeout: float = 60) -> str:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: any(text in x for x in self.lines[start:]), timeout)
            assert ok, f"no line with {text!r} in:\n{''.join(self.lines)}"
            return next(x for x in self.lines[start:] if text in x)


def _walk(fn: Any) -> Any:
    """``fn()`` (pybpf.list_links, list_programs), again when the walk gave up (EAGAIN):
    other processes on this machine create and drop links meanwhile."""
    import errno

    import pybpf

    for _ in range(50):
        try:
            return fn()
        except pybpf.BPFError as exc:
            if exc.errno != errno.EAGAIN:
                raise
            time.sleep(0.02)
    return fn()


def _live_links() -> list[Any]:
    import pybpf

    return _walk(pybpf.list_links)  # type: ignore[no-any-return]


def _own_links(pid: int) -> dict[int, str]:
    """Link id -> program name of every link fd the process ``pid`` holds."""
    import pybpf

    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("link_id:"):
                ids.add(int(line.split()[1]))
    progs = {p.id: p.name for p in _walk(pybpf.list_programs)}
    return {li.id: progs.get(li.prog_id, "?") for li in _live_links() if li.id in ids}


def _agent_config(path: Path, probes: str) -> None:
    path.write_text('[agent]\nprometheus = "127.0.0.1:0"\njson = "-"\nservice = "t"\n\n'
                    + probes)


def test_agent_reload_and_sigterm(tmp_path):

    obj = compile_test_bpf("export_metrics")
    fd = os.open("/dev/null", os.O_WRONLY)
    me = os.getpid()
    writes = (f'[[probe]]\nname = "writes"\nobject = "{obj}"\n'
              f'rodata = {{ targ_pid = {me}, targ_fd = {fd}, targ_ppid = {me} }}\n\n')
    execs = '[[probe]]\nname = "execs"\ntool = "execsnoop"\noptions = { uid = 54321 }\n\n'
    writes2 = writes.replace('name = "writes"', 'name = "writes2"')
    cfg = tmp_path / "agent.toml"
    _agent_config(cfg, writes + execs)
    p = subprocess.Popen([sys.executable, "-m", "pybpf", "agent", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    err = _Lines(p.stderr)
    try:
        url = err.wait("Prometheus metrics on").split(" on ", 1)[1].strip()
        err.wait("running 2 probes: writes, execs")
        links1 = _own_links(p.pid)
        names1 = set(links1.values())
        assert {"count_exec", "count_write"} <= names1, links1
        exec_links = {i for i, n in links1.items() if n not in ("count_exec", "count_write")}
        assert exec_links  # execsnoop's tracepoints
        do_writes(fd)

        def calls(fams: dict[str, Any], probe: str) -> float:
            return next(s.value for s in fams[f"pybpf_{probe}_write_calls"].samples
                        if s.name.endswith("_total"))

        deadline = time.monotonic() + 10
        while calls(scrape(url), "writes") != len(SIZES) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert calls(scrape(url), "writes") == len(SIZES)

        # reload: execs removed, writes unchanged (kept, still counting), writes2 new
        _agent_config(cfg, writes + writes2)
        n = len(err.lines)
        p.send_signal(signal.SIGHUP)
        err.wait("reload #1: running 2 probes: writes, writes2", n)
        links2 = _own_links(p.pid)
        live = {li.id for li in _live_links()}
        assert not exec_links & live  # detached while the agent runs on
        assert {i for i, n in links1.items() if n in ("count_exec", "count_write")} \
            <= set(links2)  # the unchanged probe was not reloaded
        assert sorted(links2.values()) == sorted(["count_exec", "count_write"] * 2)
        fams = scrape(url)
        assert calls(fams, "writes") == len(SIZES) and calls(fams, "writes2") == 0
        assert not any(k.startswith("pybpf_execs") for k in fams)
        do_writes(fd)
        deadline = time.monotonic() + 10
        while calls(scrape(url), "writes2") != len(SIZES) and time.monotonic() < deadline:
            time.sleep(0.1)
        fams = scrape(url)
        assert (calls(fams, "writes"), calls(fams, "writes2")) == (2 * len(SIZES), len(SIZES))

        # an invalid file is refused; what runs keeps running
        cfg.write_text("[[probe]\nbroken")
        n = len(err.lines)
        p.send_signal(signal.SIGHUP)
        err.wait("reload #2 refused", n)
        assert set(_own_links(p.pid)) == set(links2)
        # a probe that cannot load: the reload fails, the running probes are restored
        junk = tmp_path / "junk.bpf.o"
        junk.write_bytes(b"not an ELF file" * 8)
        _agent_config(cfg, writes + writes2.replace(f'object = "{obj}"',
                                                    f'object = "{junk}"'))
        n = len(err.lines)
        p.send_signal(signal.SIGHUP)
        err.wait("reload #3 failed", n)
        links3 = _own_links(p.pid)
        assert sorted(links3.values()) == sorted(["count_exec", "count_write"] * 2)
        assert {i for i, n in links2.items()} & set(links3)  # writes kept its links
        fams = scrape(url)
        assert (calls(fams, "writes"), calls(fams, "writes2")) == (2 * len(SIZES), 0)

        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=120)
        os.close(fd)
    assert p.returncode == 0, "".join(err.lines)
    live = {li.id for li in _live_links()}
    assert not (set(links1) | set(links2) | set(links3)) & live
    # the events went out as JSON lines, named by probe, with wall-clock times
    evs = [json.loads(x) for x in out.splitlines()]
    sizes = [e["size"] for e in evs if e["probe"] == "writes.events"]
    assert sizes == SIZES * 2
    assert [e["size"] for e in evs if e["probe"] == "writes2.events"] == SIZES
    assert all(e["cls"] in ("ROOT_UID", "USER_UID") and "time" in e and "host.boot_id" in e
               for e in evs)


def test_agent_examples_are_valid(tmp_path):
    """The documented configuration, the one inside the DaemonSet manifest, and the
    systemd unit's signals; a bad file is refused naming the key."""
    import textwrap

    from pybpf.agent import load_config

    docs = ROOT / "docs" / "agent"
    _, probes = load_config(str(docs / "agent.toml"))
    assert set(probes) == {"execs", "connects", "disk"}
    ds = (docs / "daemonset.yaml").read_text()
    inner = tmp_path / "ds.toml"
    inner.write_text(textwrap.dedent(ds.split("agent.toml: |\n")[1].split("---")[0]))
    _, probes = load_config(str(inner))
    assert probes and all("tool" in p for p in probes.values())
    assert "kind: DaemonSet" in ds and "terminationGracePeriodSeconds" in ds
    unit = (docs / "pybpf-agent.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit and "KillSignal=SIGTERM" in unit
    bad = tmp_path / "bad.toml"
    for text, msg in (('[[probe]]\ntool = "nope"\n', "no tool 'nope'"),
                      ('[[probe]]\ntool = "execsnoop"\nobject = "x"\n', "exactly one of"),
                      ('[agent]\nprometheus = 1\nport = 2\n', "unknown key(s) ['port']"),
                      ('[[probe]\n', "not valid TOML")):
        bad.write_text(text)
        p = subprocess.run([sys.executable, "-m", "pybpf", "agent", "--check", str(bad)],
                           capture_output=True, text=True, env=env(), timeout=60)
        assert p.returncode == 1 and msg in p.stderr, p.stderr


# --- the other tools' flags -------------------------------------------------------------
def test_tcpconnect_flags_count_the_tests_connects():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    n = 4
    with Receiver() as rx:
        p, url, _ = start(["tcpconnect", "--pid", str(os.getpid()), "--port", str(port),
                           "--otlp", rx.endpoint, "--prometheus", "127.0.0.1:0"],
                          "Hit Ctrl-C")
        try:
            sports = []
            for _ in range(n):
                c = socket.create_connection(("127.0.0.1", port))
                sports.append(c.getsockname()[1])
                srv.accept()[0].close()
                c.close()
            deadline = time.monotonic() + 10
            while len(rx.log_records()) < n and time.monotonic() < deadline:
                time.sleep(0.1)
            fams = scrape(url)
        finally:
            out, err = stop(p)
            srv.close()
        logs = rx.log_records()
    assert p.returncode == 0, err
    assert {s.labels["event"]: s.value for s in fams["pybpf_events"].samples} == \
        {"connect": n}
    got = sorted((attrs(r.attributes)["sport"], attrs(r.attributes)["daddr"],
                  attrs(r.attributes)["dport"]) for _, r in logs)
    assert got == sorted((s, "127.0.0.1", port) for s in sports)
    assert {res["service.name"] for res, _ in logs} == {"tcpconnect"}


def test_opensnoop_json_and_prometheus_agree(tmp_path):
    paths = [str(tmp_path / f"f{i}") for i in range(3)]
    for x in paths:
        open(x, "w").close()
    child = subprocess.Popen(
        [sys.executable, "-c", "import os, sys\nprint('ready', flush=True)\nsys.stdin.readline()\n"
         f"fds = [os.open(p, os.O_RDONLY) for p in {paths!r}]\nprint(fds, flush=True)\n"
         "sys.stdin.readline()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert readline(child).strip() == "ready"
        p, url, _ = start(["opensnoop", "--pid", str(child.pid), "--json", "--prometheus",
                           "127.0.0.1:0"], "Hit Ctrl-C")
        try:
            child.stdin.write("go\n")  # type: ignore[union-attr]
            child.stdin.flush()  # type: ignore[union-attr]
            fds = json.loads(readline(child))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                fams = scrape(url)
                n = sum(s.value for s in fams["pybpf_events"].samples)
                if n >= len(paths):
                    break
                time.sleep(0.1)
            time.sleep(0.3)
            fams = scrape(url)
        finally:
            out, err = stop(p)
    finally:
        child.kill()
        child.wait()
    assert p.returncode == 0, err
    evs = [json.loads(x) for x in out.splitlines()]
    mine = {e["path"]: e["ret"] for e in evs if e["path"] in paths}
    assert mine == dict(zip(paths, fds))
    assert {s.labels["event"]: s.value for s in fams["pybpf_events"].samples} == \
        {"open": len(evs)}
    assert all(e["host.name"] == socket.gethostname() for e in evs)


def test_audit_otlp_logs_match_its_json_lines():
    with Receiver() as rx:
        p = subprocess.run([sys.executable, "-m", "pybpf", "audit", "--otlp", rx.endpoint,
                            "--", "/bin/sh", "-c", "cat /etc/hostname >/dev/null"],
                           capture_output=True, text=True, env=env(), timeout=120)
        logs = rx.log_records()
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    cmds = [x for x in lines if x["event"] == "session.command"]
    assert [os.path.basename(c["path"]) for c in cmds] == ["sh", "cat"]
    assert all(x["host.boot_id"] and x["os.version"] == os.uname().release for x in lines)
    assert len(logs) == len(lines)
    for x, (res, rec) in zip(lines, logs):
        a = attrs(rec.attributes)
        assert rec.body.string_value == x["event"] and a["ei"] == x["ei"]
        assert a["sid"] == x["sid"] and res["service.name"] == "audit"
        # the JSON line's RFC 3339 time is the record's, to the microsecond
        assert rec.time_unix_nano // 1000 == _micros(x["time"])


def _micros(rfc3339: str) -> int:
    import datetime

    dt = datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 10**6 + dt.microsecond


def test_firewall_show_exports_live_counters():
    from attach_util import veth_pair

    from pybpf.tools.firewall import Firewall

    with veth_pair() as pair:
        rx = pair.udp_socket("b")
        port = rx.getsockname()[1]
        fw = Firewall(pair.dev_b, netns=pair.ns_b, pin=True)
        try:
            fw.add_rule("10.77.0.0/16", port=port, action="drop")
            assert pair.send_udp(5, receiver=rx, wait=0.3) == 0
            p, url, _ = start(["firewall", "show", pair.dev_b, "--netns", pair.ns_b,
                               "--prometheus", "127.0.0.1:0"], "Hit Ctrl-C")
            try:
                def rule1(what: str) -> float:
                    fam = scrape(url)[f"pybpf_firewall_rule_{what}"]
                    (v,) = [s.value for s in fam.samples if s.labels["rule"] == "1"
                            and s.labels["network"] == "10.77.0.0/16"
                            and s.labels["port"] == str(port)
                            and s.labels["action"] == "drop"]
                    return v
                assert rule1("packets") == 5
                assert rule1("bytes") == sum(42 + len(b"pybpf %d" % i) for i in range(5))
                assert pair.send_udp(3, receiver=rx, wait=0.3) == 0
                assert rule1("packets") == 8  # read at scrape time
            finally:
                out, err = stop(p)
            assert p.returncode == 0, err
            assert "10.77.0.0/16" in out
        finally:
            rx.close()
            fw.detach()
            fw.close()


def test_biolatency_histogram_counts_the_requests(tmp_path):
    """Ten O_DIRECT reads of a fresh loop device: the histogram's _count is the number
    of requests the kernel completed on it (its /sys/block stat), at least those ten."""
    import mmap

    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(8 << 20)
    dev = subprocess.run(["losetup", "--find", "--show", str(img)], capture_output=True,
                         text=True, check=True).stdout.strip()
    name = os.path.basename(dev)
    subprocess.run(["udevadm", "settle", "-t", "5"], capture_output=True)

    def done() -> int:
        with open(f"/sys/block/{name}/stat") as f:
            st = [int(x) for x in f.read().split()]
        return st[0] + st[4]  # reads + writes completed

    try:
        p, url, _ = start(["biolatency", "--device", name, "--prometheus", "127.0.0.1:0",
                           "--interval", "100"], "Tracing block device I/O")
        try:
            before = done()
            fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
            buf = mmap.mmap(-1, 4096)
            try:
                for i in range(10):
                    assert os.preadv(fd, [buf], i * 65536) == 4096
            finally:
                os.close(fd)
            deadline = time.monotonic() + 5
            while True:
                fams = scrape(url)
                got = {s.name: s.value for s in fams["pybpf_biolatency_hists_slots"].samples}
                count = got.get("pybpf_biolatency_hists_slots_count", 0)
                if count >= done() - before or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            out, err = stop(p)
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)
    assert p.returncode == 0, err
    assert fams["pybpf_biolatency_hists_slots"].type == "histogram"
    assert count == done() - before >= 10
    assert got["pybpf_biolatency_hists_slots_bucket"] <= count  # first bucket, cumulative
    assert got["pybpf_biolatency_hists_slots_sum"] >= count  # microseconds, >= 1 each


def test_run_perf_and_ring_buffers_become_logs():
    """pybpf run on an object with a ring buffer and a perf buffer: each record of both
    is one log record named by its map, with the BTF fields as attributes."""
    obj = compile_test_bpf("cli_run")
    me = os.getpid()
    with Receiver() as rx:
        p, _, _ = start(["run", obj, "--set", f"targ_pid={me}", "--set", "tag=42", "--otlp",
                         rx.endpoint], "attached")
        try:
            for _ in range(3):
                os.getcwd()
            deadline = time.monotonic() + 10
            while len(rx.log_records()) < 6 and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            out, err = stop(p)
        logs = rx.log_records()
    assert p.returncode == 0, err
    comm = open(f"/proc/{me}/comm").read().strip()
    got = sorted((r.body.string_value, attrs(r.attributes)["tag"]) for _, r in logs)
    assert got == [("cli_events", 42)] * 3 + [("cli_perf", -42)] * 3
    for _, r in logs:
        a = attrs(r.attributes)
        assert (a["pid"], a["ppid"], a["comm"]) == (me, os.getppid(), comm)
        # no timestamp field in this record: the time is when pybpf read it
        assert r.time_unix_nano == r.observed_time_unix_nano


def test_map_metrics_options_in_process(run_args):
    """The Python API: which maps, gauges, relabelling; the families as the exporters
    see them (in a child interpreter)."""
    obj = run_args[1][0]
    r = run_child("""
        import pybpf
        from pybpf.export import MapMetrics
        obj = pybpf.Object.open(P["obj"])
        for k in ("targ_pid", "targ_ppid"):
            obj.set_rodata(k, os.getpid())
        fd = os.open("/dev/null", os.O_WRONLY)
        obj.set_rodata("targ_fd", fd)
        obj.load(); obj.attach()
        for s in P["sizes"]:
            os.write(fd, b"x" * s)
        mm = MapMetrics(obj, name="w", maps=["write_calls", "write_hist", "exec_counts"],
                        gauges=["write_calls"],
                        labels={"write_hist": lambda lb: {"fd": lb["key"]}})
        fams = {f.name: f for f in mm()}
        out = {n: [f.kind, [(s.labels, getattr(s, "value", None) if f.kind != "histogram"
                              else [s.count, s.sum]) for s in f.series]]
               for n, f in fams.items()}
        obj.close()
        emit({"fams": out, "after_close": len(mm()), "fd": fd})
    """, params={"obj": obj, "sizes": SIZES}, timeout=60)
    fams = r["fams"]
    assert sorted(fams) == ["pybpf_w_write_calls", "pybpf_w_write_hist_slots"]  # no execs
    assert fams["pybpf_w_write_calls"] == ["gauge", [[{"key": "0"}, len(SIZES)]]]
    assert fams["pybpf_w_write_hist_slots"] == \
        ["histogram", [[{"fd": str(r["fd"])}, [len(SIZES), sum(SIZES)]]]]
    assert r["after_close"] == 0  # a closed object has no metrics, no error


def test_agent_detaches_before_it_flushes_and_exits(tmp_path):
    """SIGTERM: the links are gone while the agent still runs (it is then flushing to a
    collector that takes 3 s to answer), not merely because the process ended."""

    obj = compile_test_bpf("export_metrics")
    cfg = tmp_path / "agent.toml"
    with Receiver(delay=3.0) as rx:
        cfg.write_text(f'[agent]\notlp = "{rx.endpoint}"\n\n[[probe]]\nname = "w"\n'
                       f'object = "{obj}"\nrodata = {{ targ_pid = 1 }}\n')
        p = subprocess.Popen([sys.executable, "-m", "pybpf", "agent", str(cfg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env=env())
        err = _Lines(p.stderr)
        try:
            err.wait("running 1 probes: w")
            links = set(_own_links(p.pid))
            assert len(links) == 2
            p.send_signal(signal.SIGTERM)
            gone_while_alive = False
            deadline = time.monotonic() + 30
            while p.poll() is None and time.monotonic() < deadline:
                live = {li.id for li in _live_links()}
                if not links & live:
                    gone_while_alive = p.poll() is None
                    break
                time.sleep(0.02)
            p.wait(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert gone_while_alive, "".join(err.lines)
    assert p.returncode == 0, "".join(err.lines)
    assert rx.of("/v1/metrics")  # the last export did go out
