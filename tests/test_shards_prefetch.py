"""actparse.shards.results: the per-video loop with its prefetch thread gives what the plain loop gives."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest

from actparse.shards import VideoSkipped, VideoWork, results


class Work(VideoWork):
    """Decodes (prepare: sum of the input's values) then 'infers' (one: a table of the sum times two)."""

    STAGE = "demo"

    def __init__(self, fail_prepare=(), fail_one=(), broken=()):
        super().__init__({}, ".")
        self.fail_prepare, self.fail_one, self.broken = set(fail_prepare), set(fail_one), set(broken)
        self.prepare_threads, self.one_threads = set(), set()

    def prepare(self, video, table):
        self.prepare_threads.add(threading.get_ident())
        if video in self.broken:
            raise OSError(f"{video}: disk gone")
        if video in self.fail_prepare:
            raise VideoSkipped(f"{video}: corrupt JPEG")
        return float(np.sum(table.column("x").to_numpy()))

    def one(self, video, prepared):
        self.one_threads.add(threading.get_ident())
        if video in self.fail_one:
            raise VideoSkipped(f"{video}: no boxes")
        note = "empty" if prepared == 0 else None
        return pa.table({"video": [video], "y": [prepared * 2]}), note


def _items(n=7):
    rng = np.random.default_rng(0)
    return [(f"v{i}", pa.table({"x": rng.normal(size=5 + i) * (i != 3)})) for i in range(n)]


def _plain(out):
    return [(v, str(o) if isinstance(o, VideoSkipped) else [t.to_pydict() for t in o], n) for v, o, n in out]


def test_prefetch_gives_the_plain_loop_results_in_order():
    kw = dict(fail_prepare={"v2"}, fail_one={"v5"})
    w1, w2 = Work(**kw), Work(**kw)
    a = _plain(results(w1, iter(_items())))
    b = _plain(results(w2, iter(_items()), prefetch=False))
    assert a == b
    assert [v for v, _, _ in a] == [f"v{i}" for i in range(7)]
    assert a[2][1] == "v2: corrupt JPEG" and a[5][1] == "v5: no boxes" and a[3][2] == "empty"
    # the prefetch ran prepare on another thread than the model; the plain loop on one
    assert w1.prepare_threads.isdisjoint(w1.one_threads) and w2.prepare_threads == w2.one_threads


def test_an_error_of_prepare_is_raised_for_its_video_after_the_earlier_ones():
    got = []
    with pytest.raises(OSError, match="v4: disk gone"):
        for v, out, _ in results(Work(broken={"v4"}), iter(_items())):
            got.append(v)
    assert got == ["v0", "v1", "v2", "v3"]


def test_stopping_early_ends_the_prefetch_thread():
    before = {t.name for t in threading.enumerate()}
    gen = results(Work(), iter(_items(50)))
    next(gen)
    gen.close()
    assert not any(t.name == "demo-prefetch" for t in threading.enumerate()) or "demo-prefetch" in before
