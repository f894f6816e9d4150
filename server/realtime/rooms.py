"""Room policy: which rooms are public, which are private, and who may enter each.

Any room name that ``limits.ROOM_PATTERN`` allows is a public room (the seed's 聊天室 is
``lobby``), open to everyone holding ``chat.use``, except names starting with ``support-`` (in
any case), which are private:

- ``support-<id>``: the support thread ``id`` (``server/support.py``), entered only by its
  customer and by holders of ``support.answer`` (agents);
- ``support-queue``: the agents' live queue, entered only by holders of ``support.answer``;
- any other ``support-...`` name: nobody (reserved, so no public room can pass for support).

``RoomPolicy.admit`` is asked on every entry, whatever the transport: the WebSocket handshake
(a join, or a resume with ``last_id``: 403) and the TCP ``/join`` (an error line). A thread that
does not exist is refused exactly like another customer's, so ids reveal nothing. What a member
says in a private room goes through ``RoomPolicy.say``: a thread stores it with the thread's
change (refused once the thread is closed); the queue is read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from repositories.support import thread_room_name
from schemas.text import Text
from server.principal import Principal
from server.realtime.hub import DEFAULT_ROOM, Member

if TYPE_CHECKING:
    from server.support import SupportDesk

PRIVATE_PREFIX: Final = "support-"
QUEUE_ROOM: Final = "support-queue"
THREAD_ROOM: Final = re.compile(r"support-([1-9][0-9]{0,17})\Z")
MAX_THREAD_ID: Final = 2**31 - 1
"""Thread ids beyond the column's range cannot exist."""


thread_room = thread_room_name
"""The room of support thread ``thread_id``: ``support-<id>``."""


def thread_id_of(room: str) -> int | None:
    """The thread whose room is ``room``, or None for any other room."""
    match = THREAD_ROOM.match(room)
    if match is None:
        return None
    thread_id = int(match.group(1))
    return thread_id if thread_id <= MAX_THREAD_ID else None


def is_private(room: str) -> bool:
    """True for the names only ``RoomPolicy.admit`` lets in (``support-...`` in any case)."""
    return room[: len(PRIVATE_PREFIX)].lower() == PRIVATE_PREFIX


class RoomRefused(Exception):
    """Entering a room, or saying something there, is refused: a stable ``code`` and a
    ``text`` for the person, translated where it is shown."""

    def __init__(self, code: str, text: Text) -> None:
        super().__init__(str(text))
        self.code = code
        self.text = text


def not_permitted(room: str) -> RoomRefused:
    """The refusal of a private room the caller may not enter (or that does not exist)."""
    return RoomRefused("room_forbidden", Text("you may not enter the room {room}", room=room))


QUEUE_READ_ONLY = Text("nobody speaks in the support queue; open a conversation to answer it")


@dataclass(frozen=True, slots=True)
class Admission:
    """A private room someone entered, and as whom: a thread's customer, or an agent (in a
    thread or the queue)."""

    room: str
    user_id: int
    thread_id: int | None
    """The thread, or None for the queue."""
    staff: bool
    """An agent (a holder of ``support.answer`` who is not the thread's customer): their
    messages carry the staff badge."""


@dataclass(frozen=True, slots=True)
class ListedRoom:
    """A room someone may enter (TCP ``/rooms``): its name and what it is."""

    room: str
    what: Text


class RoomPolicy:
    """Who may enter which room, and what saying something in a private room does."""

    def __init__(self, support: SupportDesk) -> None:
        self.support = support

    async def admit(self, principal: Principal, room: str) -> Admission | None:
        """None for a public room; the ``Admission`` of a private room ``principal`` may enter;
        otherwise ``RoomRefused`` (``room_forbidden``)."""
        if not is_private(room):
            return None
        agent = await self.support.is_agent(principal)
        if room == QUEUE_ROOM:
            if agent:
                return Admission(room, principal.user_id, None, staff=True)
            raise not_permitted(room)
        thread_id = thread_id_of(room)
        if thread_id is None:
            raise not_permitted(room)
        customer = await self.support.customer_of(thread_id)
        if customer is None:
            raise not_permitted(room)
        if customer == principal.user_id:
            return Admission(room, principal.user_id, thread_id, staff=False)
        if agent:
            return Admission(room, principal.user_id, thread_id, staff=True)
        raise not_permitted(room)

    async def say(self, admission: Admission, user: str, text: str) -> int:
        """Say ``text`` as ``user`` in the private room of ``admission``; returns the message
        id, or raises ``RoomRefused`` (``closed``, ``read_only``, ``unavailable``)."""
        if admission.thread_id is None:
            raise RoomRefused("read_only", QUEUE_READ_ONLY)
        return await self.support.say(admission, user, text)

    async def welcome(self, member: Member, admission: Admission) -> None:
        """Send a member who just entered a private room what the room's state is (a thread's
        status, whether an agent is online)."""
        await self.support.welcome(member, admission)

    async def listed(self, principal: Principal) -> list[ListedRoom]:
        """The rooms ``principal`` may enter besides any public room: the lobby, and their own
        support threads, or (an agent) the queue and every thread in it."""
        rooms = [ListedRoom(DEFAULT_ROOM, Text("the public chat room"))]
        rooms.extend(await self.support.listed(principal))
        return rooms
