"""The benchmark's memory sampler: each named process tree, children included, from one pass over the table."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from hub.bench.measure import CpuWindow, PeakMemory, components_cpu_s, tree_cpu_s


def test_a_tree_counts_its_root_and_every_child_process() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(40_000_000); time.sleep(30)"])
    try:
        memory = PeakMemory()
        memory.watch("me", os.getpid())
        memory.watch("child", child.pid)
        # the child holds 40 MB once it has started; the tree of this process includes it
        for _ in range(100):
            if memory.current_mb(("child",)) >= 40:
                break
            time.sleep(0.05)
        child_mb = memory.current_mb(("child",))
        assert child_mb >= 40
        assert memory.current_mb(("me",)) >= child_mb + 1  # this process's own memory on top
        assert memory.current_mb(("me", "nobody")) == memory.current_mb(("me",))  # a name not watched adds nothing
    finally:
        child.kill()
        child.wait()


def test_a_tree_whose_root_is_gone_weighs_nothing() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    memory = PeakMemory()
    memory.watch("gone", gone.pid)
    assert memory.current_mb(("gone",)) == 0.0


def test_cpu_seconds_count_a_tree_and_nothing_for_a_root_that_is_gone() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    sum(i * i for i in range(200_000))  # some CPU of this process's own
    found = components_cpu_s({"me": os.getpid(), "gone": gone.pid})
    assert found["me"] > 0 and found["gone"] == 0.0
    assert tree_cpu_s(os.getpid()) >= found["me"]


def test_a_cpu_window_names_who_spent_the_cpu_per_1000_messages() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])  # asleep: spends nothing
    try:
        time.sleep(0.3)  # past the interpreter's start
        window = CpuWindow({"sleeper": child.pid}).start()
        end = time.process_time() + 0.3
        while time.process_time() < end:  # this process works for 0.3 s of CPU
            pass
        busy, by_process = window.figures(messages=1000)
        assert 0 < busy <= 1
        assert by_process["bench"] >= 250  # ms per 1000 messages: 0.3 s for 1000 of them
        assert by_process["sleeper"] < 50
    finally:
        child.kill()
        child.wait()
