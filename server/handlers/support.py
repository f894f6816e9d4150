"""Private support conversations (客服在线): the pages and the JSON API (``server/support.py`` holds
the rules).

- ``GET /robbit`` (the seed's 客服在线): a customer's own conversation, opened if they have none
  (resumed if they have one); an agent (``support.answer``) is sent to the queue.
- ``GET /support``: the agents' queue, updated live (``static/js/support.js``).
- ``GET /support/{id}``: a conversation, for its customer or an agent; anyone else gets 404,
  exactly as for a conversation that does not exist, so ids reveal nothing.
- ``POST /support/{id}/close``: an agent closes it (form; flashes what happened).
- ``GET|POST /api/support/threads``, ``GET /api/support/threads/{id}``,
  ``POST /api/support/threads/{id}/close``: the same as JSON (bearer token or session).

The chat itself goes over the ``/message`` WebSocket in the room ``support-<id>`` (the queue:
``support-queue``), whose handshake asks the room policy again (``realtime/rooms.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from tornado.routing import Rule

from repositories.errors import DomainError
from schemas.support import ThreadDetail, ThreadList, ThreadRead, ThreadResponse
from schemas.text import Text
from server.handlers.base import ApiHandler, PageHandler
from server.handlers.chat_pages import LIVE_SUPPORT
from server.openapi import Operation
from server.permissions import CHAT_USE, SUPPORT_ANSWER, route
from server.realtime.limits import MAX_TEXT_CHARS
from server.realtime.rooms import MAX_THREAD_ID, QUEUE_ROOM
from server.support import STATUS_TEXTS, thread_not_found

SUPPORT_QUEUE = Text("Support queue")
QUEUE_URL = "/support"
THREAD_ID = r"(?P<thread_id>[0-9]{1,18})"


def thread_number(thread_id: str) -> int:
    """The thread id of a URL; one beyond the column's range is NotFound (it cannot exist)."""
    number = int(thread_id)
    if number > MAX_THREAD_ID:
        raise thread_not_found(thread_id)
    return number


class SupportHomeHandler(PageHandler):
    """``GET /robbit``: a customer's conversation (opened or resumed); agents go to the queue."""

    async def get(self) -> None:
        """Render the caller's open conversation, or send an agent to ``/support``."""
        login = self.current_login()
        support = self.services.support
        if await support.is_agent(login.principal):
            self.redirect_to(QUEUE_URL)
        thread = await support.open_thread(login.principal)
        await render_thread(self, thread, agent=False)


class SupportThreadPageHandler(PageHandler):
    """``GET /support/{id}``: a conversation, for its customer or any agent (404 otherwise)."""

    async def get(self, thread_id: str) -> None:
        """Render ``chat/support_thread.html``."""
        principal = self.current_login().principal
        support = self.services.support
        number = thread_number(thread_id)
        thread = await support.thread(principal, number)  # its customer's, or an agent's
        agent = await support.customer_of(number) != principal.user_id
        await render_thread(self, thread, agent=agent)


async def render_thread(handler: PageHandler, thread: ThreadRead, *, agent: bool) -> None:
    """The conversation page: the chat of its room, its status, whether an agent is online, and
    for an agent the close button, for a customer their earlier conversations."""
    login = handler.current_login()
    earlier = [] if agent else (await handler.services.support.own(login.principal)).items
    await handler.render_page(
        "chat/support_thread.html",
        title=handler.text(LIVE_SUPPORT),
        thread=thread,
        status=handler.text(STATUS_TEXTS[thread.status]),
        statuses={code: handler.text(text) for code, text in STATUS_TEXTS.items()},
        agent=agent,
        me=login.principal.name,
        earlier=[item for item in earlier if item.id != thread.id],
        max_chars=MAX_TEXT_CHARS,
    )


class SupportQueuePageHandler(PageHandler):
    """``GET /support``: the agents' queue of open conversations, kept live by its script."""

    async def get(self) -> None:
        """Render ``chat/support_queue.html``."""
        queue = await self.services.support.queue()
        await self.render_page(
            "chat/support_queue.html",
            title=self.text(SUPPORT_QUEUE),
            threads=queue.items,
            count=queue.count,
            room=QUEUE_ROOM,
            me=self.current_login().principal.name,
            statuses={code: self.text(text) for code, text in STATUS_TEXTS.items()},
        )


class SupportClosePageHandler(PageHandler):
    """``POST /support/{id}/close``: an agent closes a conversation (XSRF-protected form)."""

    async def post(self, thread_id: str) -> None:
        """Close, flash what happened, go back to the conversation."""
        number = thread_number(thread_id)
        try:
            await self.services.support.close(self.current_login().principal, number)
        except DomainError as refused:
            if refused.status == 404:
                raise
            self.flash(refused.message, level="error")
        else:
            self.flash(Text("The conversation is closed"))
        self.redirect_to(f"{QUEUE_URL}/{number}")


class SupportThreadsHandler(ApiHandler):
    """``GET /api/support/threads``: an agent's queue, or the caller's own conversations;
    ``POST``: open (or resume) the caller's conversation."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "The support queue (holders of support.answer: open conversations with a message, "
            "those waiting for an answer first), or the caller's own conversations",
            ThreadList,
            tags=("support",),
        ),
        "POST": Operation(
            "Open the caller's support conversation, or return the one already open",
            ThreadResponse,
            tags=("support",),
        ),
    }

    async def get(self) -> None:
        """List the conversations the caller may see."""
        principal = self.current_login().principal
        await self.respond(await self.services.support.visible_threads(principal))

    async def post(self) -> None:
        """Open or resume the caller's conversation."""
        thread = await self.services.support.open_thread(self.current_login().principal)
        await self.respond(ThreadResponse(thread=thread))


class SupportThreadHandler(ApiHandler):
    """``GET /api/support/threads/{id}``: a conversation and its last messages (its customer or
    an agent; 404 for anyone else, as for one that does not exist)."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "A support conversation with its last 200 messages, oldest first",
            ThreadDetail,
            errors=(404,),
            tags=("support",),
        )
    }

    async def get(self, thread_id: str) -> None:
        """The conversation and its messages."""
        principal = self.current_login().principal
        detail = await self.services.support.detail(principal, thread_number(thread_id))
        await self.respond(detail)


class SupportThreadCloseHandler(ApiHandler):
    """``POST /api/support/threads/{id}/close``: an agent closes a conversation."""

    operations: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Close a support conversation (409 thread_closed when it is closed already)",
            ThreadResponse,
            errors=(404, 409),
            tags=("support",),
        )
    }

    async def post(self, thread_id: str) -> None:
        """Close it; everyone in it and every agent's queue is told."""
        principal = self.current_login().principal
        thread = await self.services.support.close(principal, thread_number(thread_id))
        await self.respond(ThreadResponse(thread=thread))


def support_routes(deps: dict[str, Any]) -> list[Rule]:
    """The support pages and API (``/robbit`` is the seed's name of the customer's page)."""
    return [
        route(r"/robbit", SupportHomeHandler, deps, name="robbit", need=CHAT_USE),
        route(QUEUE_URL, SupportQueuePageHandler, deps, name="support", need=SUPPORT_ANSWER),
        route(
            rf"/support/{THREAD_ID}",
            SupportThreadPageHandler,
            deps,
            name="support-thread",
            need=CHAT_USE,
        ),
        route(
            rf"/support/{THREAD_ID}/close",
            SupportClosePageHandler,
            deps,
            name="support-close",
            need=SUPPORT_ANSWER,
        ),
        route(
            r"/api/support/threads",
            SupportThreadsHandler,
            deps,
            name="api-support-threads",
            need=CHAT_USE,
        ),
        route(
            rf"/api/support/threads/{THREAD_ID}",
            SupportThreadHandler,
            deps,
            name="api-support-thread",
            need=CHAT_USE,
        ),
        route(
            rf"/api/support/threads/{THREAD_ID}/close",
            SupportThreadCloseHandler,
            deps,
            name="api-support-close",
            need=SUPPORT_ANSWER,
        ),
    ]
