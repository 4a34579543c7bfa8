"""Server-Sent Events read off an upstream's byte stream, each kept as received for forwarding.

Written here because a proxy needs each event's exact bytes (to pass them on
unchanged) beside its ``data`` (to meter usage); SSE client libraries hand back
only the parsed fields.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator


def split_events(pieces: Iterable[bytes]) -> Iterator[tuple[bytes, bytes | None]]:
    """``(event, data)`` for each event in ``pieces`` (bytes as they arrive, split anywhere).

    ``event`` is the whole event with its blank-line end, ``\\n``-terminated whatever
    line ends the upstream used; ``data`` is its ``data:`` lines joined by ``\\n``, or
    None for an event with none (a keep-alive comment). A last event without its blank
    line is still yielded when the bytes end.
    """
    buffer = b""
    for piece in pieces:
        buffer += piece
        if b"\r" in buffer:  # CRLF or CR line ends: made LF, but a last "\r" may be half of a "\r\n"
            held = b"\r" if buffer.endswith(b"\r") else b""
            buffer = buffer[:len(buffer) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n") + held
        while True:
            end = buffer.find(b"\n\n")
            if end < 0:
                break
            event, buffer = buffer[:end + 2], buffer[end + 2:]
            yield event, event_data(event)
    if buffer.strip():
        event = buffer.rstrip(b"\r\n") + b"\n\n"
        yield event, event_data(event)


def event_data(event: bytes) -> bytes | None:
    """The ``data`` field of one event (its ``data:`` lines, one optional space after the colon, joined)."""
    if event.startswith(b"data: ") and event.count(b"\n") == 2:  # the usual one-line event, fast
        return event[6:-2]
    lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
