"""The output log against a plain model: whatever is written, kept and dropped add up."""

from __future__ import annotations

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from pericles.model import STREAMS
from pericles.store.output import OutputLog

#: Pure unit tests: no server, so once is enough.
STORES = ("memory",)

writes_strategy = st.lists(
    st.tuples(st.sampled_from(STREAMS), st.binary(min_size=1, max_size=40)), max_size=40
)


def fill(limit: int, writes: list[tuple[str, bytes]]) -> tuple[OutputLog, dict[str, bytes], bytes]:
    log = OutputLog(limit)
    full = {name: bytearray() for name in STREAMS}
    both = bytearray()
    for stream, data in writes:
        log.append(stream, data)
        full[stream] += data
        both += data
    return log, {k: bytes(v) for k, v in full.items()}, bytes(both)


@settings(max_examples=500, deadline=None)
@given(st.integers(2, 64), writes_strategy)
def test_each_stream_keeps_its_head_and_tail(limit: int, writes: list[tuple[str, bytes]]) -> None:
    log, full, _ = fill(limit, writes)
    for name in STREAMS:
        data = full[name]
        kept, dropped = log.read(name, 0)
        assert len(kept) + dropped == len(data)
        assert len(kept) <= limit
        if len(data) <= limit:
            assert kept == data
        else:
            head = log.streams[name].head_bytes
            assert kept[:head] == data[:head]
            assert dropped == len(data) - len(kept)
            assert data.endswith(kept[head:])
        assert log.streams[name].dropped == dropped
        for offset in {0, 1, len(data) // 2, max(len(data) - 1, 0), len(data), len(data) + 5}:
            part, lost = log.read(name, offset)
            assert len(part) + lost == max(len(data) - offset, 0)
            if len(data) <= limit:
                assert part == data[offset:]


@settings(max_examples=500, deadline=None)
@given(st.integers(2, 64), writes_strategy)
def test_both_streams_come_back_in_read_order(limit: int, writes: list[tuple[str, bytes]]) -> None:
    log, full, both = fill(limit, writes)
    for offset in (0, 3, len(both) // 2, len(both)):
        kept, dropped = log.read_both(offset)
        assert len(kept) + dropped == max(len(both) - offset, 0)
        if all(len(v) <= limit // 2 for v in full.values()):
            assert kept == both[offset:]


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 64), writes_strategy, st.data())
def test_pieces_resume_without_loss_or_duplicate(
    limit: int, writes: list[tuple[str, bytes]], data: st.DataObject
) -> None:
    log, full, _ = fill(limit, writes)
    positions = {name: data.draw(st.integers(0, len(full[name]))) for name in STREAMS}
    got = {name: bytearray() for name in STREAMS}
    for piece in log.pieces(positions):
        assert piece.offset >= positions[piece.stream] + len(got[piece.stream])
        got[piece.stream] += piece.data
    for name in STREAMS:
        if len(full[name]) <= limit:
            assert bytes(got[name]) == full[name][positions[name] :]


def test_a_big_stream_keeps_exactly_its_limit() -> None:
    log = OutputLog(1024 * 1024)
    chunk = bytes(range(256)) * 256
    for _ in range(800):  # 50 MiB
        log.append("stdout", chunk)
    kept, dropped = log.read("stdout", 0)
    assert len(kept) == 1024 * 1024
    assert dropped == 800 * len(chunk) - 1024 * 1024
    assert kept[: 512 * 1024] == (chunk * 8)[: 512 * 1024]
    assert kept[512 * 1024 :] == (chunk * 8)[-512 * 1024 :]


@settings(max_examples=10, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(
    st.integers(8200, 12_000),
    st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=8),
    st.integers(0, 1),
)
def test_alternating_writes_below_the_limit_drop_nothing(
    pairs: int, lines: list[bytes], first: int
) -> None:
    """Streams that alternate in tiny writes make a chunk per write: past the chunk bounds
    the log merges chunks, but drops nothing while each stream is under its limit."""
    order = STREAMS if first == 0 else STREAMS[::-1]
    writes = [(order[i % 2], lines[i % len(lines)]) for i in range(2 * pairs)]
    limit = max(sum(len(d) for s, d in writes if s == name) for name in STREAMS)
    log, full, both = fill(limit, writes)
    for name in STREAMS:
        assert log.read(name, 0) == (full[name], 0)
        assert log.streams[name].dropped == 0
    kept, dropped = log.read_both(0)
    assert dropped == 0
    assert sorted(kept) == sorted(both)
