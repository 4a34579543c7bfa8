"""Server-Sent Events read off an upstream's bytes (gateway/sse.py), each kept whole for forwarding."""
from __future__ import annotations

import pytest

from gateway.sse import split_events

STREAM = b'data: {"a":1}\n\n: keep-alive\n\nevent: response.created\ndata: {"b":\ndata: 2}\n\ndata: [DONE]\n\n'
EXPECTED = [(b'data: {"a":1}\n\n', b'{"a":1}'), (b": keep-alive\n\n", None),
            (b'event: response.created\ndata: {"b":\ndata: 2}\n\n', b'{"b":\n2}'),
            (b"data: [DONE]\n\n", b"[DONE]")]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_events_come_out_whole_however_the_bytes_are_cut(size):
    pieces = [STREAM[start:start + size] for start in range(0, len(STREAM), size)]
    assert list(split_events(pieces)) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 5, 1000])
def test_crlf_and_cr_line_ends_are_read_as_lf(size):
    crlf = STREAM.replace(b"\n", b"\r\n")
    assert list(split_events([crlf[i:i + size] for i in range(0, len(crlf), size)])) == EXPECTED
    assert list(split_events([STREAM.replace(b"\n", b"\r")])) == EXPECTED


def test_a_last_event_without_its_blank_line_still_counts():
    assert list(split_events([b"data: x\n\ndata: tail"])) == [(b"data: x\n\n", b"x"), (b"data: tail\n\n", b"tail")]
    assert list(split_events([b"data: x\n\n", b"\n"])) == [(b"data: x\n\n", b"x")]


def test_data_without_the_optional_space():
    assert list(split_events([b"data:{}\n\n"])) == [(b"data:{}\n\n", b"{}")]
