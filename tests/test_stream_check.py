"""The end-of-stream and first-event checks on relayed event streams (gateway/streamcheck)."""

from __future__ import annotations

import json

from llama_orchestrator.gateway.streamcheck import StreamCheck

DONE = b'data: {"choices":[]}\n\ndata: [DONE]\n\n'


def run(check: StreamCheck, pieces: list[bytes]) -> bytes:
    return b"".join(check.feed(p) for p in pieces) + check.rest()


def test_an_openai_end_split_across_pieces_is_seen() -> None:
    for cut in range(1, len(DONE)):
        check = StreamCheck(b"/v1/chat/completions", "m")
        assert run(check, [DONE[:cut], DONE[cut:]]) == DONE
        assert check.complete, cut


def test_a_model_writing_the_end_marker_is_not_an_end() -> None:
    text = json.dumps({"choices": [{"delta": {"content": "x\ndata: [DONE]\n"}}]})
    check = StreamCheck(b"/v1/completions?x=1", "m")
    check.feed(b"data: " + text.encode() + b"\n\n")
    assert not check.complete
    check.feed(b"data: [DONE]\n\n")
    assert check.complete


def test_other_routes_are_not_checked() -> None:
    check = StreamCheck(b"/completion", "m")
    assert check.complete and not StreamCheck.watches(b"/completion")
    assert check.feed(b'data: {"stop":true}\n\n') == b'data: {"stop":true}\n\n'


def test_a_missing_message_start_is_put_in_front() -> None:
    first = b'event: content_block_start\ndata: {"type":"content_block_start"}\n\n'
    check = StreamCheck(b"/v1/messages", "asked/name")
    assert check.feed(first[:10]) == b""  # the first event is still arriving
    out = check.feed(first[10:]) + check.feed(b"event: message_stop\ndata: {}\n\n")
    head, rest = out.split(b"\n\n", 1)
    event = json.loads(head.split(b"data: ", 1)[1])
    assert head.startswith(b"event: message_start\n")
    assert event["message"]["model"] == "asked/name" and event["message"]["content"] == []
    assert rest.startswith(first) and check.complete


def test_a_message_start_that_came_is_left_alone() -> None:
    body = b'event: message_start\ndata: {"type":"message_start"}\n\nevent: message_stop\n\n'
    check = StreamCheck(b"/v1/messages", "m")
    assert run(check, [body]) == body and check.complete


def test_responses_end_events() -> None:
    for end in (b"response.completed", b"response.incomplete", b"response.failed"):
        check = StreamCheck(b"/v1/responses", "m")
        check.feed(b"event: response.created\ndata: {}\n\nevent: " + end + b"\ndata: {}\n\n")
        assert check.complete
