"""Slot choice and the host KV store's plan (engines/kv_slots.py): exact, no model."""

from __future__ import annotations

import random

import pytest

from ttscale.engines.kv_slots import SlotPlan, SlotPlanner, common_prefix


def naive_prefix(a, b) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def test_common_prefix_matches_the_naive_scan() -> None:
    rng = random.Random(0)
    for _ in range(500):
        base = [rng.randrange(4) for _ in range(rng.randrange(0, 60))]
        a = base + [rng.randrange(4) for _ in range(rng.randrange(0, 20))]
        b = base + [rng.randrange(4) for _ in range(rng.randrange(0, 20))]
        assert common_prefix(tuple(a), b) == naive_prefix(a, b)
    assert common_prefix((), (1,)) == 0
    assert common_prefix((1, 2, 3), (1, 2, 3)) == 3
    assert common_prefix((1, 2, 3), (1, 2)) == 2


def planner(contents, clocks, *, store_mib: int = 0, min_gain: int = 4) -> SlotPlanner:
    p = SlotPlanner(len(contents), store_bytes=store_mib << 20, min_gain=min_gain)
    for i, (c, t) in enumerate(zip(contents, clocks, strict=True)):
        p.content[i] = tuple(c)
        p.clock[i] = t
    p._tick = max(clocks)
    return p


def test_affinity_longest_shared_prefix_then_least_recent() -> None:
    p = planner([(1, 2, 3), (1, 2, 3, 4, 5), (9,), ()], [3, 1, 0, 2])
    assert p.plan((1, 2, 3, 4, 5, 6)) == SlotPlan(1)  # the parent's slot
    assert p.busy == [False, True, False, False]
    assert p.plan((7, 7)) == SlotPlan(2)  # nothing shared: least recently used idle slot
    assert p.plan((1, 2)) == SlotPlan(0)
    assert p.plan((1,)) == SlotPlan(3)
    assert p.plan((1,)) is None  # nothing idle
    p.release(1, (1, 2, 3, 4, 5, 6, 8), continuable=True)
    assert p.plan((1, 2, 3, 4, 5, 6, 8, 9)) == SlotPlan(1)


def test_restores_a_stored_prefix_into_the_least_useful_idle_slot() -> None:
    path = tuple(range(100, 140))
    p = planner([(1, 2), (100, 101, 7), (5, 6, 7, 8, 9, 10)], [5, 6, 1], store_mib=1)
    p.continuable = [False, True, True]
    assert p.add(path, "kv1.bin", 1000) == []
    plan = p.plan((*path, 7))
    # stored 40 tokens vs 2 in slot 1: restore, into slot 0 (not continuable) rather than an LRU slot
    # whose continuable content nothing else holds
    assert plan == SlotPlan(0, save=None, restore=path)
    assert p.name_of(path) == "kv1.bin"


def test_min_gain_decides_between_slot_and_store() -> None:
    key = tuple(range(10))
    p = planner([tuple(range(7)), ()], [1, 2], store_mib=1, min_gain=4)
    p.add(key, "a", 10)
    assert p.plan((*key, 99)).restore is None  # 10 stored vs 7 in slot 0: gain 3 < 4
    p = planner([tuple(range(6)), ()], [1, 2], store_mib=1, min_gain=4)
    p.add(key, "a", 10)
    assert p.plan((*key, 99)) == SlotPlan(1, restore=key)  # gain 4: restore into the empty slot


def test_saves_continuable_content_before_overwriting_it() -> None:
    step = (1, 2, 3, 4, 5, 6, 7, 8)
    p = planner([step], [1], store_mib=1, min_gain=4)
    p.continuable = [True]
    assert p.plan((1, 2, 9)) == SlotPlan(0, save=step)  # 6 tokens would be lost: saved first
    p.release(0, step, continuable=True)
    assert p.plan((*step, 9)) == SlotPlan(0)  # continued in place: nothing to save
    p.release(0, step, continuable=True)
    assert p.plan((1, 2, 3, 4, 5, 9)) == SlotPlan(0)  # 3 tokens lost < min_gain
    p.release(0, step, continuable=False)
    assert p.plan((9,)) == SlotPlan(0)  # not continuable (EOS, length): not worth keeping
    p.release(0, step, continuable=True)
    p.add(step, "s", 8)
    assert p.plan((9,)) == SlotPlan(0)  # already stored
    off = planner([step], [1], store_mib=0)
    off.continuable = [True]
    assert off.plan((9,)) == SlotPlan(0)  # no store: never saves


def test_store_evicts_least_recently_used_beyond_its_budget() -> None:
    p = SlotPlanner(1, store_bytes=1 << 20)
    half = (1 << 19) + 1
    assert p.add((1,), "a", half) == []
    assert p.add((2,), "b", 1000) == []
    assert p.name_of((1,)) == "a"  # touched: (2,) is now the oldest
    assert p.add((3,), "c", half) == ["b", "a"]  # oldest first, until within the budget
    assert p.stored == 1 and p.name_of((3,)) == "c" and p.stored_bytes == half
    assert p.add((3,), "d", 10) == ["c"]  # replaced: the old file goes
    assert p.drop((3,)) == "d" and p.stored == 0 and p.stored_bytes == 0


def test_fan_out_only_when_the_prompt_is_not_resident_enough() -> None:
    prompt = tuple(range(50))
    p = planner([prompt, prompt[:10], ()], [1, 2, 3], store_mib=1, min_gain=4)
    assert not p.needs_fanout(prompt, 1)
    assert p.needs_fanout(prompt, 2)  # one idle slot holds it, two samples want it
    p.add(prompt, "p", 10)
    assert not p.needs_fanout(prompt, 3)  # the store holds it: every sample restores it
    off = planner([(), ()], [1, 2], store_mib=0)
    assert not off.needs_fanout(prompt, 2)
    assert not p.needs_fanout((1, 2), 2)  # shorter than min_gain: nothing to share


def test_release_unknown_content_forgets_the_slot() -> None:
    p = planner([(1, 2, 3)], [1], store_mib=1)
    p.plan((1, 2, 3, 4))
    p.release(0, None, continuable=True)
    assert p.content == [()] and p.continuable == [False] and p.busy == [False]


def test_bad_slot_count() -> None:
    with pytest.raises(ValueError, match="n_slots"):
        SlotPlanner(0)
