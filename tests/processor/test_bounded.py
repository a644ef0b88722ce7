"""The bounded containers' batch operations leave exactly what one call per item leaves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from civicmeter.processor.detection.bounded import LruMap, RecentSet

items = st.lists(st.integers(0, 30), max_size=40)


@given(capacity=st.integers(1, 12), before=items, batch=items)
def test_add_new_remembers_as_adding_one_by_one(
    capacity: int, before: list[int], batch: list[int]
) -> None:
    together, one_by_one = RecentSet[int](capacity), RecentSet[int](capacity)
    for item in before:
        together.add(item)
        one_by_one.add(item)
    kept = list(together._order), set(together._members)
    added = [one_by_one.add(item) for item in batch]
    if together.add_new(batch):
        assert all(added)  # only when no item was remembered or repeated
        assert list(together._order) == list(one_by_one._order)
        assert together._members == one_by_one._members == set(one_by_one._order)
    else:  # one was remembered, or one repeats (one by one may have forgotten it by then)
        assert not kept[1].isdisjoint(batch) or len(set(batch)) < len(batch)
        assert (list(together._order), set(together._members)) == kept  # nothing changed


@given(
    capacity=st.integers(1, 12),
    before=st.lists(st.tuples(st.integers(0, 20), st.integers()), max_size=30),
    batch=st.dictionaries(st.integers(0, 20), st.integers(), max_size=20),
    touched=st.lists(st.integers(0, 25), max_size=20),
)
def test_put_all_and_touch_leave_the_order_of_one_call_per_key(
    capacity: int, before: list[tuple[int, int]], batch: dict[int, int], touched: list[int]
) -> None:
    together, one_by_one = LruMap[int, int](capacity), LruMap[int, int](capacity)
    for key, value in before:
        together.put(key, value)
        one_by_one.put(key, value)
    together.put_all(batch)
    for key, value in batch.items():
        one_by_one.put(key, value)
    together.touch(touched)
    for key in touched:
        one_by_one.get(key)
    assert list(together._entries.items()) == list(one_by_one._entries.items())
