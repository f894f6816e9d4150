"""The realtime protocols as data: the chat WebSocket ``/message`` and the TCP chat.

OpenAPI has no words for a WebSocket's frames or a line protocol, so ``realtime_protocols``
describes both in the shape of an AsyncAPI channel (what the client sends, what the server
sends, how it ends) and ``server.routes`` puts it into the OpenAPI document as ``x-realtime``;
``/docs`` renders it. Every limit, close code and fixed line is taken from the modules that
enforce or send it, so the description cannot drift from them; the tests compare the frame
types and commands listed here with those the code sends and accepts.
"""

from __future__ import annotations

from typing import Any

from server.permissions import CHAT_USE
from server.realtime.hub import DEFAULT_ROOM, HISTORY_ON_JOIN, RESUME_LIMIT
from server.realtime.limits import (
    MAX_TEXT_CHARS,
    RATE_BURST,
    RATE_PER_SECOND,
    REFUSALS_BEFORE_CLOSE,
    ROOM_PATTERN,
)
from server.realtime.pings import CLOSE_NORMAL, PING_INTERVAL
from server.realtime.sessions import CLOSE_SESSION_ENDED
from server.realtime.tcp import (
    DEVICE,
    GREETING,
    HELP,
    LINE_LIMIT,
    LOGIN_ATTEMPTS,
    LOGIN_HINT,
    LOGIN_TIMEOUT,
    LOGIN_USAGE,
    NOT_UTF8,
    QUEUE_SIZE,
    SESSION_ENDED,
    TCP_NEED,
    TOO_LONG,
)
from server.realtime.websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SLOW_CONSUMER,
    LAST_ID_PATTERN,
    MAX_FRAME_BYTES,
    SEND_BUFFER_BYTES,
)

CLOSE_TOO_BIG = 1009
"""Tornado's close code for a frame over ``max_message_size``."""

MESSAGE_FIELDS = [
    {"name": "user", "type": "string", "description": "发言人的用户名"},
    {"name": "text", "type": "string", "description": "消息正文"},
    {"name": "ts", "type": "number", "description": "Unix 时间戳（秒，带小数）"},
    {"name": "id", "type": "integer", "description": "消息 id，按发送顺序递增；重连时作 last_id"},
]


def _frame(
    kind: str, description: str, fields: list[dict[str, str]], example: Any
) -> dict[str, Any]:
    room = {"name": "room", "type": "string", "description": "房间名"}
    kind_field = {"name": "type", "type": "string", "description": f"固定为 {kind}"}
    return {
        "type": kind,
        "description": description,
        "fields": [kind_field, room, *fields],
        "example": example,
    }


def websocket_protocol() -> dict[str, Any]:
    """The chat WebSocket ``/message``: handshake, client frames, server frames, close codes."""
    message = {"user": "ann", "text": "你好", "ts": 1714550400.25, "id": 42}
    return {
        "path": "/message",
        "permission": CHAT_USE,
        "subprotocol": None,
        "authentication": (
            "握手时用登录后浏览器的会话 cookie 认证（不接受 bearer 令牌）；没有有效会话 401，"
            f"角色没有 `{CHAT_USE}` 权限 403。只接受本站的 Origin 和设置 `ws_origins` 里的"
            "来源，否则 403。不协商子协议和压缩，每帧都是 UTF-8 JSON 文本。"
        ),
        "query": [
            {
                "name": "room",
                "required": False,
                "pattern": ROOM_PATTERN.pattern,
                "default": DEFAULT_ROOM,
                "description": "要进入的房间：1 到 64 个字母（任何文字）、数字、_、. 或 -；"
                "不合规则握手 400",
            },
            {
                "name": "last_id",
                "required": False,
                "pattern": LAST_ID_PATTERN.pattern,
                "description": "重连时收到的最后一条消息 id：history 帧只给出之后错过的消息"
                f"（最多 {RESUME_LIMIT} 条）；不合规则握手 400",
            },
        ],
        "client_frames": [
            {
                "type": "message",
                "description": "向当前房间发一条消息",
                "fields": [
                    {"name": "type", "type": "string", "description": "固定为 message"},
                    {
                        "name": "text",
                        "type": "string",
                        "description": f"消息正文，非空，最多 {MAX_TEXT_CHARS} 个字符",
                    },
                ],
                "example": {"type": "message", "text": "你好"},
            },
            {
                "type": "（纯文本）",
                "description": "不是 JSON 对象的文本帧整个当作消息正文（种子页面的发法）",
                "fields": [],
                "example": "你好",
            },
        ],
        "server_frames": [
            _frame(
                "history",
                f"进入房间后的第一帧：最近 {HISTORY_ON_JOIN} 条消息；带 last_id 重连时是之后错过的"
                f"消息（最多 {RESUME_LIMIT} 条）",
                [
                    {
                        "name": "messages",
                        "type": "array",
                        "description": "消息列表，从旧到新，每条有 user、text、ts、id",
                    },
                    {
                        "name": "recovered",
                        "type": "boolean",
                        "description": "false：错过的消息多于能补发的，有消息缺失",
                    },
                ],
                {"type": "history", "room": DEFAULT_ROOM, "messages": [message], "recovered": True},
            ),
            _frame(
                "message",
                "房间里有人发了消息（自己发的也会收到）",
                MESSAGE_FIELDS,
                {"type": "message", "room": DEFAULT_ROOM, **message},
            ),
            _frame(
                "join",
                "某用户在这个房间的第一个连接进入",
                [
                    {"name": "user", "type": "string", "description": "用户名"},
                    {"name": "ts", "type": "number", "description": "Unix 时间戳（秒）"},
                ],
                {"type": "join", "room": DEFAULT_ROOM, "user": "ann", "ts": 1714550400.0},
            ),
            _frame(
                "leave",
                "某用户在这个房间的最后一个连接离开",
                [
                    {"name": "user", "type": "string", "description": "用户名"},
                    {"name": "ts", "type": "number", "description": "Unix 时间戳（秒）"},
                ],
                {"type": "leave", "room": DEFAULT_ROOM, "user": "ann", "ts": 1714550400.0},
            ),
            _frame(
                "presence",
                "当前在线的用户：进入房间后发给自己；Redis 重连后发给房间里所有人",
                [{"name": "users", "type": "array", "description": "在线用户名列表"}],
                {"type": "presence", "room": DEFAULT_ROOM, "users": ["ann", "bob"]},
            ),
            _frame(
                "error",
                "只发给发送者：这条消息被拒绝（连接保持）",
                [
                    {"name": "code", "type": "string", "description": "原因代码，见下表"},
                    {"name": "text", "type": "string", "description": "说明（英文）"},
                    {"name": "ts", "type": "number", "description": "Unix 时间戳（秒）"},
                ],
                {
                    "type": "error",
                    "room": DEFAULT_ROOM,
                    "code": "too_long",
                    "text": f"a message holds at most {MAX_TEXT_CHARS} characters",
                    "ts": 1714550400.0,
                },
            ),
        ],
        "error_codes": [
            {
                "code": "bad_frame",
                "description": '二进制帧、不是 {"type": "message", '
                '"text": ...} 的 JSON 对象，或嵌套太深',
            },
            {"code": "empty", "description": "消息为空或只有空白"},
            {"code": "too_long", "description": f"超过 {MAX_TEXT_CHARS} 个字符"},
            {"code": "bad_text", "description": "文本含孤立代理项，不是合法 Unicode"},
            {
                "code": "rate_limited",
                "description": f"太快：平均每秒 {RATE_PER_SECOND:g} 条，突发最多 {RATE_BURST} 条",
            },
            {
                "code": "unavailable",
                "description": "进入房间失败（如数据库不可用），随后以 1011 关闭",
            },
        ],
        "close_codes": [
            {
                "code": CLOSE_NORMAL,
                "reason": "ping timed out",
                "description": f"服务器每 {PING_INTERVAL:g} 秒 ping 一次，客户端没有回应",
            },
            {
                "code": CLOSE_GOING_AWAY,
                "reason": "server shutting down",
                "description": "服务器关闭",
            },
            {
                "code": CLOSE_POLICY_VIOLATION,
                "reason": "rate limit exceeded",
                "description": f"连续 {REFUSALS_BEFORE_CLOSE} 条消息因太快被拒绝",
            },
            {
                "code": CLOSE_TOO_BIG,
                "reason": "",
                "description": f"一帧超过 {MAX_FRAME_BYTES} 字节",
            },
            {
                "code": CLOSE_INTERNAL_ERROR,
                "reason": "chat unavailable",
                "description": "进入房间失败",
            },
            {
                "code": CLOSE_SESSION_ENDED,
                "reason": "session ended",
                "description": (
                    "会话已退出或被撤销（退出登录、改密码、管理员停用）：请重新登录，不要重连"
                ),
            },
            {
                "code": CLOSE_SLOW_CONSUMER,
                "reason": "slow consumer",
                "description": f"客户端读得太慢，未发出的数据超过 {SEND_BUFFER_BYTES} 字节",
            },
        ],
    }


def tcp_protocol() -> dict[str, Any]:
    """The TCP chat: connection, login, commands, server lines, limits."""
    return {
        "setting": "tcp_port",
        "permission": TCP_NEED,
        "encoding": (
            "UTF-8 文本，一行一条；客户端行尾 LF 或 CRLF，服务器行尾 CRLF。"
            "可以用 nc、telnet 或几行 socket 代码连接；密码是明文传输，只在可信网络上开放端口。"
        ),
        "login": (
            f"连上后服务器先发问候行；{LOGIN_TIMEOUT:g} 秒内必须发 `LOGIN <name> <password>`。"
            "密码是用户名后第一个空格之后的全部内容（可含空格）；含空格的用户名写在双引号里："
            '`LOGIN "ann lee" secret`。账号和限流与 API 相同；'
            f"同一连接登录失败 {LOGIN_ATTEMPTS} 次后断开；角色需要 `{TCP_NEED}` 权限。"
            f"每次登录是一个会话（设备 `{DEVICE}`），出现在 `GET /user/sessions` 里，撤销它就断开"
            "连接；连接结束时会话随之撤销。"
        ),
        "commands": [
            {"command": "LOGIN <name> <password>", "description": "登录（只在登录前）"},
            {"command": "/who", "description": "当前房间谁在线"},
            {
                "command": "/join ROOM",
                "description": "离开当前房间，进入 ROOM（房间名规则同 WebSocket）",
            },
            {"command": "/help", "description": "列出命令"},
            {"command": "/quit", "description": "退出"},
            {
                "command": "（其他行）",
                "description": f"作为消息发到当前房间（最多 {MAX_TEXT_CHARS} 个字符）；空行忽略",
            },
        ],
        "server_lines": [
            {
                "line": "[room] user: text",
                "description": "一条消息（别人文本里的控制字符换成空格）",
            },
            {"line": "* ...", "description": "通知：进入、离开、谁在线、历史标题、告别"},
            {"line": "! ...", "description": "错误：这一行被拒绝或忽略"},
        ],
        "fixed_lines": [
            {"line": GREETING, "description": "连接后的问候"},
            {"line": LOGIN_HINT, "description": "登录前发了别的内容"},
            {"line": LOGIN_USAGE, "description": "LOGIN 行格式不对"},
            {
                "line": f"* hello <name>; you are in {DEFAULT_ROOM}. Try /help",
                "description": "登录成功，进入默认房间",
            },
            {"line": "* <room>: the last N messages", "description": "进入房间：随后是最近的消息"},
            {"line": "* <room>: no messages yet", "description": "进入房间：还没有消息"},
            {
                "line": "* <user> joined <room> / * <user> left <room>",
                "description": "有人进入或离开",
            },
            {"line": "* online in <room>: a, b", "description": "谁在线（进入房间后和 /who）"},
            {"line": HELP, "description": "/help 的回答"},
            {"line": TOO_LONG, "description": "一行太长，已跳过"},
            {"line": NOT_UTF8, "description": "不是合法 UTF-8，已跳过"},
            {"line": SESSION_ENDED, "description": "会话在别处被撤销，连接关闭"},
        ],
        "limits": [
            {"name": "行长度", "value": f"{LINE_LIMIT} 字节（不含行尾）"},
            {"name": "消息长度", "value": f"{MAX_TEXT_CHARS} 个字符"},
            {
                "name": "速率",
                "value": f"平均每秒 {RATE_PER_SECOND:g} 行，突发 {RATE_BURST} 行；"
                f"连续 {REFUSALS_BEFORE_CLOSE} 行被拒后断开",
            },
            {"name": "空闲", "value": "设置 tcp_idle_seconds 秒没有输入就断开"},
            {"name": "输出队列", "value": f"{QUEUE_SIZE} 行；客户端不读、队列满了就断开"},
        ],
    }


def realtime_protocols() -> dict[str, Any]:
    """Both protocols, as the OpenAPI document's ``x-realtime``."""
    return {"websocket": websocket_protocol(), "tcp": tcp_protocol()}
