"""Frames the fan-out builds once and writes to many connections (``realtime/hub/connection.py``)."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from realtime.hub.connection import Frames, text_frame


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65_535, 65_536, 70_000])
def test_a_text_frame_is_what_websockets_serializes(size: int) -> None:
    # every length encoding of RFC 6455 §5.2: 7 bits, 16 bits after 126, 64 bits after 127
    payload = bytes(i % 251 for i in range(size))
    reference = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    assert text_frame(payload) == reference


def test_frames_batch_messages_and_build_raw_frames_once() -> None:
    messages = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    frames = Frames(messages, max_batch_bytes=16)
    assert frames.payloads == [b'{"type":"batch","messages":[{"n":1},{"n":2}]}', b'{"n":3}']
    assert frames.raw == [text_frame(p) for p in frames.payloads]
    assert frames.raw is frames.raw
