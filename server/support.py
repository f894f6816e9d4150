"""Private support conversations (客服在线): the rules, and their live side in every process.

A customer who opens support gets their own thread (``support_thread``), whose chat room
``support-<id>`` only they and holders of ``support.answer`` (agents) may enter
(``server/realtime/rooms.py``). A customer has at most one open thread: opening support again
resumes it, and after it is closed the next visit starts a new one. Agents see a queue of the open
threads that hold a message (``new``, ``waiting``, ``answered``), may enter and answer any, and
close one; what an agent says carries ``"staff": true``.

Every message of a thread is stored with the thread's change, in one transaction whose first
statement is the conditional UPDATE that accepts it (``repositories/support.py``): a message and
a close racing each other are ordered by the row's lock, and a closed thread refuses what comes
after. Only then is the message published to the room (and a ``thread`` frame, the thread as
``ThreadRead``, to the room and to the queue room ``support-queue``): every process delivers
both to its members, so agents' queues update live wherever they are connected.

Whether an agent is online is the presence of the queue room. Each process's ``SupportDesk``
watches the bus for the queue's ``join`` and ``leave`` frames (and for ``presence`` frames,
which a resync after a Redis outage publishes) and tells its local members of thread rooms with
an ``agents`` frame when the answer changes; a member entering a thread is told at once
(``welcome``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from repositories.chat import StoredMessage
from repositories.errors import Conflict, NotFound
from repositories.models import utcnow
from repositories.support import SupportRepository, ThreadView
from schemas.support import (
    PREVIEW_CHARS,
    LastMessage,
    SupportMessageRead,
    ThreadDetail,
    ThreadList,
    ThreadRead,
)
from schemas.text import Text
from server.errors import is_database_outage
from server.menu_access import MenuAccess
from server.permissions import SUPPORT_ANSWER
from server.principal import Principal
from server.realtime.hub import Hub, Member, encode
from server.realtime.rooms import (
    QUEUE_ROOM,
    Admission,
    ListedRoom,
    RoomRefused,
    thread_id_of,
    thread_room,
)

log = logging.getLogger("mservices.chat")

Spawn = Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]]
"""``Background.spawn``: runs a coroutine as a tracked task."""

QUEUE_LIMIT: Final = 200
"""The queue (page, API, TCP ``/rooms``) lists at most this many threads."""
OWN_LIMIT: Final = 20
"""A customer's list shows their newest this many threads."""
MESSAGES_LIMIT: Final = 200
"""``GET /api/support/threads/{id}`` returns at most this many messages (the newest)."""
CUSTOMER_CACHE: Final = 10_000
"""Threads whose customer is remembered (a thread's customer never changes)."""

STATUS_TEXTS: Final = {
    "new": Text("new: no agent has answered yet"),
    "waiting": Text("waiting for a reply"),
    "answered": Text("answered"),
    "closed": Text("closed"),
}
THREAD_CLOSED = Text("this conversation is closed; open support again to start a new one")
NOT_STORED = Text("the message could not be stored; try again in a moment")

_JOIN = '{"type":"join",'
_LEAVE = '{"type":"leave",'
_PRESENCE = '{"type":"presence",'


def thread_not_found(thread_id: int | str) -> NotFound:
    """The refusal of a thread that does not exist or is not the caller's (the same answer)."""
    return NotFound(
        Text("support conversation {id} does not exist", id=thread_id), code="thread_not_found"
    )


def thread_read(view: ThreadView) -> ThreadRead:
    """A thread as the API, the pages and the ``thread`` frame show it."""
    thread, last = view.thread, view.last
    return ThreadRead(
        id=thread.id,
        room=thread_room(thread.id),
        customer=view.customer,
        status=thread.status,  # one of THREAD_STATUSES (pydantic checks)
        version=thread.version,
        created_at=thread.created_at,
        updated_at=thread.updated_at,
        closed_at=thread.closed_at,
        last_message=None
        if last is None
        else LastMessage(
            user=last.user,
            text=last.text[:PREVIEW_CHARS],
            ts=last.created_at.timestamp(),
            staff=last.staff,
        ),
    )


def message_read(message: StoredMessage) -> SupportMessageRead:
    """A stored message of a thread as the API shows it."""
    return SupportMessageRead(
        id=message.id,
        user=message.user,
        text=message.text,
        ts=message.created_at.timestamp(),
        staff=message.staff,
    )


class SupportDesk:
    """Support threads for one process: open, list, say, close, and the live frames."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        hub: Hub,
        menus: MenuAccess,
        *,
        spawn: Spawn,
    ) -> None:
        self._sessions = sessions
        self.hub = hub
        self._menus = menus
        self._spawn = spawn
        self._customers: OrderedDict[int, int] = OrderedDict()
        self.agents_online: bool | None = None
        """Whether an agent has the queue open anywhere, as this process last learned it
        (None until it first asks)."""
        self._refreshing: asyncio.Task[Any] | None = None
        self._again = False
        hub.bus.subscribe(self.on_frame)

    # -- who -------------------------------------------------------------------------------

    async def is_agent(self, principal: Principal) -> bool:
        """True when ``principal`` holds ``support.answer`` (cached with the role set)."""
        return await self._menus.permits(principal, SUPPORT_ANSWER)

    async def customer_of(self, thread_id: int) -> int | None:
        """The customer of thread ``thread_id``, or None when there is no such thread. Found
        customers are remembered (they never change); a miss is asked again next time, since
        the thread may be created meanwhile."""
        customer = self._customers.get(thread_id)
        if customer is not None:
            self._customers.move_to_end(thread_id)
            return customer
        async with self._sessions() as session:
            customer = await SupportRepository(session).customer_id(thread_id)
        if customer is not None:
            self._remember(thread_id, customer)
        return customer

    def _remember(self, thread_id: int, customer: int) -> None:
        self._customers[thread_id] = customer
        if len(self._customers) > CUSTOMER_CACHE:
            self._customers.popitem(last=False)

    # -- reading -----------------------------------------------------------------------------

    async def open_thread(self, principal: Principal) -> ThreadRead:
        """The caller's open thread, started if they have none (a customer opening support)."""
        async with self._sessions() as session:
            repository = SupportRepository(session)
            existing = await repository.get_open_for(principal.user_id)
            view = None if existing is None else await repository.view(existing.id)
        if view is None:  # a write only when there is something to write
            async with self._sessions() as session, session.begin():
                repository = SupportRepository(session)
                thread, _ = await repository.open_for(principal.user_id)
                view = await repository.view(thread.id)
            assert view is not None  # read or written in this very transaction
        self._remember(view.thread.id, principal.user_id)
        return thread_read(view)

    async def thread(self, principal: Principal, thread_id: int) -> ThreadRead:
        """Thread ``thread_id`` for its customer or an agent; NotFound for anyone else."""
        view = await self._visible(principal, thread_id)
        return thread_read(view)

    async def detail(self, principal: Principal, thread_id: int) -> ThreadDetail:
        """Thread ``thread_id`` and its last MESSAGES_LIMIT messages (customer or agent)."""
        view = await self._visible(principal, thread_id)
        async with self._sessions() as session:
            messages = await SupportRepository(session).messages(thread_id, limit=MESSAGES_LIMIT)
        return ThreadDetail(
            thread=thread_read(view), messages=[message_read(message) for message in messages]
        )

    async def queue(self) -> ThreadList:
        """The agents' queue: open threads holding a message, waiting ones first."""
        async with self._sessions() as session:
            repository = SupportRepository(session)
            views = await repository.list_open(limit=QUEUE_LIMIT)
            count = await repository.count_open()
        return ThreadList(items=[thread_read(view) for view in views], count=count)

    async def own(self, principal: Principal) -> ThreadList:
        """The caller's own threads, newest first."""
        async with self._sessions() as session:
            views = await SupportRepository(session).list_for_customer(
                principal.user_id, limit=OWN_LIMIT
            )
        return ThreadList(items=[thread_read(view) for view in views], count=len(views))

    async def visible_threads(self, principal: Principal) -> ThreadList:
        """What ``GET /api/support/threads`` lists: the queue for an agent, else the caller's
        own threads."""
        if await self.is_agent(principal):
            return await self.queue()
        return await self.own(principal)

    async def listed(self, principal: Principal) -> list[ListedRoom]:
        """The private rooms ``principal`` may enter, for TCP ``/rooms``."""
        if await self.is_agent(principal):
            queue = await self.queue()
            rooms = [ListedRoom(QUEUE_ROOM, Text("the support queue (agents only)"))]
            threads = queue.items
        else:
            rooms = []
            threads = (await self.own(principal)).items
        for thread in threads:
            status = STATUS_TEXTS[thread.status]
            what = Text(
                "{customer}'s support conversation, {status}",
                customer=thread.customer,
                status=status,
            )
            rooms.append(ListedRoom(thread.room, what))
        return rooms

    async def _visible(self, principal: Principal, thread_id: int) -> ThreadView:
        async with self._sessions() as session:
            view = await SupportRepository(session).view(thread_id)
        if view is None:
            raise thread_not_found(thread_id)
        if view.thread.customer_id != principal.user_id and not await self.is_agent(principal):
            raise thread_not_found(thread_id)
        return view

    # -- writing -----------------------------------------------------------------------------

    async def say(self, admission: Admission, user: str, text: str) -> int:
        """Store ``text`` in the thread of ``admission`` with the thread's change, then publish
        it and the thread; returns the message id. ``RoomRefused``: ``closed`` once the thread
        is closed, ``unavailable`` when the database is away."""
        assert admission.thread_id is not None
        message = StoredMessage(
            id=self.hub.ids.next(),
            room=admission.room,
            user=user,
            text=text,
            created_at=utcnow(),
            staff=admission.staff,
        )
        agent_id = admission.user_id if admission.staff else None
        try:
            async with self._sessions() as session, session.begin():
                repository = SupportRepository(session)
                accepted = await repository.add_message(
                    admission.thread_id, message, agent_id=agent_id
                )
                view = await repository.view(admission.thread_id) if accepted else None
        except Exception as error:
            if is_database_outage(error):
                raise RoomRefused("unavailable", NOT_STORED) from error
            raise
        if view is None:
            raise RoomRefused("closed", THREAD_CLOSED)
        await self.hub.publish_stored(message)
        await self.announce(view)
        return message.id

    async def close(self, principal: Principal, thread_id: int) -> ThreadRead:
        """Close thread ``thread_id`` (the route has checked ``support.answer``) and publish
        it; Conflict ``thread_closed`` when it was closed already (of two closes at once,
        exactly one succeeds), NotFound when there is no such thread."""
        async with self._sessions() as session, session.begin():
            repository = SupportRepository(session)
            closed = await repository.close(thread_id, principal.user_id)
            view = await repository.view(thread_id)
        if view is None:
            raise thread_not_found(thread_id)
        if not closed:
            raise Conflict(
                Text("support conversation {id} is closed already", id=thread_id),
                code="thread_closed",
            )
        await self.announce(view)
        return thread_read(view)

    async def announce(self, view: ThreadView) -> None:
        """Publish the thread, as it is now, to its room and to the queue (every process)."""
        fields = thread_read(view).model_dump(mode="json")
        room = thread_room(view.thread.id)
        await self.hub.bus.publish(room, encode("thread", room, thread=fields))
        await self.hub.bus.publish(QUEUE_ROOM, encode("thread", QUEUE_ROOM, thread=fields))

    # -- live: who is online -------------------------------------------------------------------

    async def welcome(self, member: Member, admission: Admission) -> None:
        """Tell a member who just entered a thread its state and whether an agent is online
        (it is in the room already: a change from now on reaches it as a frame too)."""
        if admission.thread_id is None:
            return
        # Best effort: the member is in the room, and the next change reaches it anyway.
        try:
            async with self._sessions() as session:
                view = await SupportRepository(session).view(admission.thread_id)
            if view is not None:
                fields = thread_read(view).model_dump(mode="json")
                member.send(encode("thread", admission.room, thread=fields))
            if self.agents_online is None:
                # The first answer in this process goes to every member of a thread here,
                # this one included.
                await asyncio.shield(self._refresh())
                return
        except Exception:
            log.warning("could not tell %s the state of %s", member.user, admission.room)
            return
        if self.agents_online is not None:
            member.send(encode("agents", admission.room, online=self.agents_online))

    def on_frame(self, room: str, payload: str) -> None:
        """Bus subscriber: an agent came to or left the queue (or a resync republished who is
        online somewhere): find out again whether an agent is online."""
        if payload.startswith(_PRESENCE) or (
            room == QUEUE_ROOM and payload.startswith((_JOIN, _LEAVE))
        ):
            self._again = True
            self._refresh()

    def _refresh(self) -> asyncio.Task[Any]:
        """The running refresh, or a new one (a background task: its failure is logged)."""
        if self._refreshing is None:
            self._refreshing = self._spawn(self._refresh_agents())
        return self._refreshing

    async def _refresh_agents(self) -> None:
        """Ask presence until no change arrived during the question; tell this process's
        thread members when the answer changed."""
        try:
            self._again = True
            while self._again:
                self._again = False
                online = bool(await self.hub.online(QUEUE_ROOM))
                if online != self.agents_online:
                    self.agents_online = online
                    self._tell_thread_members(online)
        finally:
            self._refreshing = None

    def _tell_thread_members(self, online: bool) -> None:
        for room in self.hub.rooms():
            if thread_id_of(room) is None:
                continue
            payload = encode("agents", room, online=online)
            for member in self.hub.members(room):
                member.send(payload)
