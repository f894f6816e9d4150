"""One room's window of recent messages: id order, no duplicates, bounded, and whether a resume
gap lies inside it. (Loading from history and the hub's use of it are in ``test_hub.py``.)"""

from __future__ import annotations

import pytest

from server.realtime import recent
from server.realtime.hub import encode
from server.realtime.recent import Fields, RoomMessages, frame_fields

ROOM = "lobby"


def fields(message_id: int) -> Fields:
    """A message's frame fields with id ``message_id``."""
    return {"user": "bob", "text": f"m{message_id}", "ts": 1.0, "id": message_id}


def ids(room: RoomMessages) -> list[int]:
    """The ids of the messages kept, in their order."""
    return [message["id"] for message in room.messages]


def test_messages_are_kept_in_id_order_whatever_order_they_arrive_in() -> None:
    room = RoomMessages(size=5)
    for message_id in (3, 1, 2):
        assert room.add(fields(message_id))

    assert ids(room) == [1, 2, 3]


def test_a_message_that_arrives_twice_is_kept_once() -> None:
    room = RoomMessages(size=5)
    room.add(fields(1))

    assert not room.add(fields(1))
    assert ids(room) == [1]


def test_the_window_keeps_the_newest_messages_and_refuses_older_ones_when_full() -> None:
    room = RoomMessages(size=3, complete=True)
    for message_id in (1, 2, 3, 4):
        room.add(fields(message_id))

    assert ids(room) == [2, 3, 4]
    assert not room.complete, "message 1 was pushed out"
    assert not room.add(fields(0))
    assert ids(room) == [2, 3, 4]


def test_adding_a_message_forgets_the_encoded_history_frame() -> None:
    room = RoomMessages(size=3)
    room.encoded = "stale"

    room.add(fields(1))

    assert room.encoded is None


def test_a_gap_inside_the_window_is_answered_from_it() -> None:
    room = RoomMessages(size=3)
    for message_id in (10, 20, 30):
        room.add(fields(message_id))

    after = room.after(10)
    assert after is not None and [message["id"] for message in after] == [20, 30]
    assert room.after(30) == []
    assert room.after(99) == []


def test_a_gap_reaching_before_the_window_is_not_answered() -> None:
    room = RoomMessages(size=3)
    for message_id in (10, 20, 30):
        room.add(fields(message_id))

    assert room.after(9) is None
    assert RoomMessages(size=3).after(1) is None, "nothing known yet"
    assert [message["id"] for message in room.kept_after(9)] == [10, 20, 30]
    assert [message["id"] for message in room.kept_after(15)] == [20, 30]


def test_a_complete_room_answers_every_gap() -> None:
    room = RoomMessages(size=3, complete=True)
    room.add(fields(10))

    after = room.after(1)
    assert after is not None and [message["id"] for message in after] == [10]
    assert RoomMessages(size=3, complete=True).after(1) == []


def test_frame_fields_reads_message_frames_only() -> None:
    message = encode("message", ROOM, user="bob", text="hi", ts=2.5, id=7)

    assert frame_fields(message) == {"user": "bob", "text": "hi", "ts": 2.5, "id": 7}
    assert frame_fields(encode("join", ROOM, user="bob", ts=2.5)) is None
    assert frame_fields(encode("presence", ROOM, users=["bob"])) is None


def test_a_room_remembers_the_ids_it_delivered_up_to_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(recent, "SEEN_LIMIT", 3)
    room = RoomMessages(size=2)
    assert [room.see(message_id) for message_id in (5, 7, 5, 6)] == [True, True, False, True]
    assert room.forgotten == 0

    assert room.see(8), "past the limit the oldest is forgotten"
    assert room.forgotten == 5
    assert room.see(5), "whether 5 was delivered is no longer known"
    assert not room.see(8)
