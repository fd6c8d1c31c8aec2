"""The record index: creation order, and which records are in each state or carry each label.

Every record gets a sequence number when it is added (creation order). The index keeps the
numbers of all records, of each state's and of each label's records in sorted lists, so a
query walks only the records it returns: `?status=pending&limit=10` with 100,000 finished
records kept touches ten, and a page `after=` an id starts by a bisection, not a scan.
Costs: O(log n) per add, move between states and removal; O(N + log n) for a page of N.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator
from typing import TypeVar

from sortedcontainers import SortedList

from pericles.model import ListQuery, Payload, Status

Label = tuple[str, str]
_K = TypeVar("_K")


def _labels(record: Payload) -> Iterable[Label]:
    return (record.labels or {}).items()


class RecordIndex:
    def __init__(self) -> None:
        self._next = 0
        self._seq: dict[str, int] = {}
        self._by_seq: dict[int, Payload] = {}
        self._all: SortedList[int] = SortedList()
        self._by_state: dict[Status, SortedList[int]] = {}
        self._by_label: dict[Label, SortedList[int]] = {}
        #: Records the last query looked at: what a complexity test checks.
        self.touched = 0

    def __len__(self) -> int:
        return len(self._seq)

    def __contains__(self, payload_id: str) -> bool:
        return payload_id in self._seq

    def get(self, payload_id: str) -> Payload | None:
        seq = self._seq.get(payload_id)
        return None if seq is None else self._by_seq[seq]

    def values(self) -> Iterator[Payload]:
        """Every record, oldest first."""
        return (self._by_seq[seq] for seq in self._all)

    def add(self, record: Payload) -> None:
        seq = self._next
        self._next += 1
        self._seq[record.id] = seq
        self._by_seq[seq] = record
        self._all.add(seq)
        self._by_state.setdefault(record.state, SortedList()).add(seq)
        for label in _labels(record):
            self._by_label.setdefault(label, SortedList()).add(seq)

    def replace(self, record: Payload) -> None:
        """Put `record` in place of the one with its id, which must be indexed."""
        seq = self._seq[record.id]
        old = self._by_seq[seq]
        self._by_seq[seq] = record
        if old.state is not record.state:
            self._unlist(self._by_state, old.state, seq)
            self._by_state.setdefault(record.state, SortedList()).add(seq)
        if old.labels != record.labels:
            for label in _labels(old):
                self._unlist(self._by_label, label, seq)
            for label in _labels(record):
                self._by_label.setdefault(label, SortedList()).add(seq)

    def pop(self, payload_id: str) -> Payload | None:
        seq = self._seq.pop(payload_id, None)
        if seq is None:
            return None
        record = self._by_seq.pop(seq)
        self._all.remove(seq)
        self._unlist(self._by_state, record.state, seq)
        for label in _labels(record):
            self._unlist(self._by_label, label, seq)
        return record

    @staticmethod
    def _unlist(lists: dict[_K, SortedList[int]], key: _K, seq: int) -> None:
        found = lists[key]
        found.remove(seq)
        if not found:
            del lists[key]

    def select(self, query: ListQuery) -> Iterator[Payload]:
        """The records `query` matches in its order, from past its `after`; `after` must be
        indexed. Lazy: take only what the page needs."""
        self.touched = 0
        start = self._seq[query.after] if query.after is not None else None
        reverse = query.descending
        if query.descending:
            bounds = {"maximum": start, "inclusive": (True, False)}
        else:
            bounds = {"minimum": start, "inclusive": (False, True)}
        # The narrowest of the lists the query names is walked; the rest is checked per record.
        candidates: list[list[SortedList[int]]] = []
        if query.statuses:
            candidates.append([self._by_state.get(s) or SortedList() for s in query.statuses])
        for label in query.labels:
            candidates.append([self._by_label.get(label) or SortedList()])
        if candidates:
            lists = min(candidates, key=lambda group: sum(map(len, group)))
        else:
            lists = [self._all]
        ranges = [found.irange(reverse=reverse, **bounds) for found in lists]  # type: ignore[arg-type]
        if len(ranges) == 1:
            seqs: Iterator[int] = ranges[0]
        else:
            seqs = heapq.merge(*ranges, reverse=reverse)
        for seq in seqs:
            record = self._by_seq[seq]
            self.touched += 1
            if query.matches(record):
                yield record

    def page_of(self, query: ListQuery) -> tuple[list[Payload], bool]:
        """Up to `query.limit` matching records and whether more match past them."""
        found = self.select(query)
        if query.limit is None:
            return list(found), False
        page = list(itertools.islice(found, query.limit + 1))
        return page[: query.limit], len(page) > query.limit
