"""Attach mechanics, one module per hook family (``Program.attach_*`` are the entry points).

* :mod:`~pybpf.attach.tc`: tcx and netkit chains (ordering, revisions, query) and
  classic clsact filters over netlink;
* :mod:`~pybpf.attach.uprobe_multi`, :mod:`~pybpf.attach.kprobe_multi`: many probes,
  one link, per-target cookies (and sessions);
* :mod:`~pybpf.attach.netfilter`, :mod:`~pybpf.attach.struct_ops`,
  :mod:`~pybpf.attach.perf`, :mod:`~pybpf.attach.cgroup`, :mod:`~pybpf.attach.sockets`.

Hooks newer than the linked libbpf are attached with raw ``BPF_LINK_CREATE``
(:func:`pybpf.attach._common.link_create`): the kernel decides what works.
"""
