"""``Object.attach()`` attaches every program or none: when one program cannot be attached
(tests/bpf/attach_half.bpf.c: `missing` names a tracepoint that does not exist), the
links it made before are gone, as the kernel sees it: the attached program's counter
stays at 0 and no kernel link runs it."""

from __future__ import annotations

import errno
import os

import pytest
from conftest import loaded_for_me

import pybpf

pytestmark = pytest.mark.kernel


def test_a_failed_attach_leaves_no_link_behind():
    with loaded_for_me("attach_half", attach=False) as obj:
        with pytest.raises(pybpf.AttachError) as ei:
            obj.attach()
        assert ei.value.errno == errno.ENOENT and "missing" in str(ei.value)
        assert obj.links == []
        prog_id = obj.programs["counts"].info().id
        assert prog_id not in {info.prog_id for info in pybpf.list_links()}
        os.getppid()
        assert obj.bss.calls == 0  # nothing ran the program
        # the object stays usable: the program attaches on its own
        with obj.programs["counts"].attach():
            os.getppid()
        assert obj.bss.calls == 1
