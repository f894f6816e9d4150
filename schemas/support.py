"""Schemas of private support conversations (客服在线): a thread as read, lists, a thread with its
messages. The ``thread`` frames of the chat WebSocket carry the same ``ThreadRead``."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field

from schemas.common import Schema

ThreadStatus = Literal["new", "waiting", "answered", "closed"]

PREVIEW_CHARS = 140
"""A thread's newest message is shown cut to this many characters in lists and frames."""


class SupportMessageRead(Schema):
    """One message of a thread."""

    id: int = Field(description="The message id (also its position: ids grow with time).")
    user: str
    text: str
    ts: float = Field(description="Unix time in seconds, with a fraction.")
    staff: bool = Field(description="Said by support staff (shown with a badge).")


class LastMessage(Schema):
    """A thread's newest message, its text cut to ``PREVIEW_CHARS`` characters."""

    user: str
    text: str
    ts: float
    staff: bool


class ThreadRead(Schema):
    """A support thread: whose, where it stands, its newest message."""

    id: int
    room: str = Field(description="The chat room of the thread: `support-<id>`.")
    customer: str = Field(description="The name of the customer whose conversation it is.")
    status: ThreadStatus = Field(
        description="`new`: no agent has answered yet; `waiting`: the customer wrote after an "
        "answer; `answered`: the newest message is an agent's; `closed`: nothing more is said."
    )
    version: int = Field(
        description="Counts the thread's changes: of two copies, the higher version is newer."
    )
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    last_message: LastMessage | None


class ThreadList(Schema):
    """Threads: an agent's queue (open threads with a message, those waiting for an answer
    first) or a customer's own threads (newest first)."""

    msg: Literal["success"] = "success"
    items: list[ThreadRead]
    count: int = Field(description="How many threads there are (items holds at most the limit).")


class ThreadResponse(Schema):
    """One thread (after opening or closing it)."""

    msg: Literal["success"] = "success"
    thread: ThreadRead


class ThreadDetail(Schema):
    """One thread with its last messages, oldest first."""

    msg: Literal["success"] = "success"
    thread: ThreadRead
    messages: list[SupportMessageRead]
