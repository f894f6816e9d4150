"""The ``/user`` resource (seed §4): login, registration, profile, password, logout, sessions."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Iterator
from typing import ClassVar

from schemas.common import Success
from schemas.text import Text
from schemas.user import (
    DEVICE_NAMES,
    AccountClose,
    LoginRequest,
    LoginResponse,
    MeResponse,
    MobileType,
    PasswordChange,
    ProfileUpdate,
    RegisterRequest,
    SessionList,
    SessionRead,
    UserRead,
    UserResponse,
)
from server.accounts import Accounts, IssuedLogin, WeakPassword, WrongPassword
from server.errors import ApiError, FieldProblem
from server.handlers.base import ApiHandler
from server.openapi import Operation

PASSWORD_CHANGE_KEYS = frozenset({"old_pwd", "new_pwd"})
SEED_LOGIN_KEYS = frozenset({"name", "pwd"})
"""Seed §4.3's page POSTs exactly these to ``/user`` to log in (a free name registers)."""


class UserApiHandler(ApiHandler):
    """Helpers shared by the ``/user`` handlers: the account service, and its field errors
    rendered as the envelope's ``errors``."""

    def accounts(self) -> Accounts:
        """The account service for this request's transaction, caller and address."""
        return Accounts(self.services, self.db, client_ip=self.request.remote_ip, actor=self.login)

    def device(self, mobile_type: MobileType | None = None) -> str:
        """The device of a login: the seed's ``mobile_type``, or the User-Agent."""
        if mobile_type is not None:
            return DEVICE_NAMES[mobile_type]
        return (self.request.headers.get("User-Agent") or "unknown")[:64]

    @contextlib.contextmanager
    def field_errors(self) -> Iterator[None]:
        """Render a weak or wrong password as 422 / 403 naming the field and each reason."""
        try:
            yield
        except WeakPassword as weak:
            raise ApiError(
                422,
                weak.code,
                weak.message,
                errors=[FieldProblem(weak.field, problem) for problem in weak.problems],
            ) from None
        except WrongPassword as wrong:
            raise ApiError(
                403,
                wrong.code,
                wrong.message,
                errors=[FieldProblem(wrong.field, Text("does not match the current password"))],
            ) from None

    async def log_in(self, body: LoginRequest) -> None:
        """Check the password (throttled), issue a token and answer with it."""
        accounts = self.accounts()
        issued = await accounts.log_in(
            name=body.name, password=body.pwd, device=self.device(body.mobile_type)
        )
        await self.respond_login(issued)

    def respond_login(self, issued: IssuedLogin) -> Awaitable[None]:
        """Answer a login with its token."""
        return self.respond(
            LoginResponse(
                token=issued.token,
                expires_at=issued.row.expires_at,
                user=UserRead.model_validate(issued.user),
            )
        )

    async def change_password(self, change: PasswordChange) -> None:
        """Verify the old password, store the new one, revoke every other token."""
        accounts = self.accounts()
        with self.field_errors():
            await accounts.change_password(old=change.old_pwd, new=change.new_pwd)
        self.publish_after_commit(*accounts.events)
        await self.respond(Success())


class UserHandler(UserApiHandler):
    """``/user``: GET logs in (the seed's JSON-body GET), POST registers, PUT changes the profile
    or the password, DELETE logs out."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "Log in (the seed's client: GET with a JSON body)",
            LoginResponse,
            request=LoginRequest,
            errors=(401, 429),
            tags=("user",),
        ),
        "POST": Operation(
            "Register an account (or, with only name and pwd for an existing name, log in)",
            UserResponse,
            status=201,
            also=((200, LoginResponse),),
            request=RegisterRequest,
            errors=(401, 409, 429),
            description="The new account holds the role named by `MSERVICES_SIGNUP_ROLE`, when it "
            "exists. One client IP may register `MSERVICES_SIGNUP_PER_IP` accounts per "
            "`MSERVICES_SIGNUP_WINDOW_SECONDS`; beyond that 429 `too_many_signups` with "
            "`Retry-After`.\n\nSeed §4.3 compatibility: a body of exactly `name` and `pwd` "
            "naming an existing account is a login, throttled and audited like `POST /user/login`: "
            '200 with `{"msg": "success", "token", "expires_at", "user"}` '
            "(a LoginResponse), 401 `invalid_credentials` or 429 `too_many_attempts`.",
            tags=("user",),
        ),
        "PUT": Operation(
            "Change name, mobile or city; exactly old_pwd and new_pwd change the password",
            UserResponse,
            request=ProfileUpdate,
            errors=(403, 409, 429),
            tags=("user",),
        ),
        "DELETE": Operation("Log out: revoke the token of this request", Success, tags=("user",)),
    }

    async def get(self) -> None:
        """Log in with ``{"name", "pwd", "mobile_type"?}`` as the seed's client sends it."""
        await self.log_in(self.parse(LoginRequest))

    async def post(self) -> None:
        """Register an account; 201 with the user (holding the sign-up role), 409 when the name
        is taken, 429 when this address has registered too many accounts lately. Exactly
        ``{"name", "pwd"}`` for an existing name logs in instead (seed §4.3)."""
        data = self.parse_json()
        body = self.validate(RegisterRequest, data)
        accounts = self.accounts()
        with self.field_errors():
            if isinstance(data, dict) and set(data) == SEED_LOGIN_KEYS:
                result = await accounts.log_in_or_register(
                    name=body.name, password=body.pwd, device=self.device()
                )
                if isinstance(result, IssuedLogin):
                    await self.respond_login(result)
                    return
                user = result
            else:
                user = await accounts.register(
                    name=body.name, password=body.pwd, mobile=body.mobile, city=body.city
                )
        await self.respond(UserResponse(user=UserRead.model_validate(user)), status=201)

    async def put(self) -> None:
        """Change name, mobile or city; a body of exactly ``old_pwd`` and ``new_pwd`` changes
        the password instead (seed: 修改口令)."""
        self.current_login()
        data = self.parse_json()
        if isinstance(data, dict) and set(data) == PASSWORD_CHANGE_KEYS:
            await self.change_password(self.validate(PasswordChange, data))
            return
        changes = self.validate(ProfileUpdate, data).model_dump(exclude_unset=True)
        accounts = self.accounts()
        user = await accounts.update_profile(changes)
        self.publish_after_commit(*accounts.events)
        await self.respond(UserResponse(user=UserRead.model_validate(user)))

    async def delete(self) -> None:
        """Log out: revoke the token this request was made with (seed: 注销)."""
        self.current_login()
        accounts = self.accounts()
        await accounts.log_out()
        self.publish_after_commit(*accounts.events)
        await self.respond(Success())


class LoginHandler(UserApiHandler):
    """``POST /user/login``: the same login for browsers, which cannot send a body with GET."""

    operations: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Log in", LoginResponse, request=LoginRequest, errors=(401, 429), tags=("user",)
        )
    }

    async def post(self) -> None:
        """Log in."""
        await self.log_in(self.parse(LoginRequest))


class MeHandler(UserApiHandler):
    """``GET /user/me``: the caller's profile, roles and menu tree, from caches when warm."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation(
            "The current user, their roles and menu tree",
            MeResponse,
            tags=("user",),
        )
    }

    async def get(self) -> None:
        """Answer from the login cache and the menu cache; the database only on a miss."""
        login = self.current_login()
        tree = await self.services.menus.tree_json_for(login.principal, self.locale.code)
        # MeResponse, assembled from cached encodings: the tree is encoded once per role set.
        await self.respond_json(
            b'{"msg":"success","user":%s,"roles":%s,"menus":%s}'
            % (login.user.model_dump_json().encode(), json.dumps(login.role_names).encode(), tree)
        )


class PasswordHandler(UserApiHandler):
    """``PUT /user/password``: change the password; every other session is logged out."""

    operations: ClassVar[dict[str, Operation]] = {
        "PUT": Operation(
            "Change the password (other sessions are revoked)",
            Success,
            request=PasswordChange,
            errors=(403, 429),
            tags=("user",),
        )
    }

    async def put(self) -> None:
        """Verify ``old_pwd``, apply ``new_pwd`` under the policy."""
        self.current_login()
        await self.change_password(self.parse(PasswordChange))


class AccountHandler(UserApiHandler):
    """``DELETE /user/account``: close the account (deactivated, tokens revoked, data kept)."""

    operations: ClassVar[dict[str, Operation]] = {
        "DELETE": Operation(
            "Close the account (deactivate; data kept)",
            Success,
            request=AccountClose,
            errors=(403, 409, 429),
            tags=("user",),
        )
    }

    async def delete(self) -> None:
        """Confirm with the password; the last active superuser cannot close their account."""
        self.current_login()
        body = self.parse(AccountClose)
        accounts = self.accounts()
        with self.field_errors():
            await accounts.close_account(password=body.pwd)
        self.publish_after_commit(*accounts.events)
        await self.respond(Success())


class SessionsHandler(UserApiHandler):
    """``GET /user/sessions``: the caller's live logins."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation("The caller's live sessions", SessionList, tags=("user",))
    }

    async def get(self) -> None:
        """List tokens that are neither revoked nor expired (idle or absolute)."""
        login = self.current_login()
        items = [
            SessionRead(
                id=token.id,
                device=token.device,
                created_at=token.created_at,
                last_used_at=token.last_used_at,
                expires_at=token.expires_at,
                current=token.id == login.token_id,
            )
            for token in await self.accounts().live_sessions()
        ]
        await self.respond(SessionList(items=items, count=len(items)))


class SessionHandler(UserApiHandler):
    """``DELETE /user/sessions/{id}``: revoke one of the caller's logins."""

    operations: ClassVar[dict[str, Operation]] = {
        "DELETE": Operation("Revoke one session", Success, tags=("user",))
    }

    async def delete(self, session_id: str) -> None:
        """Another user's session id is 404, like one that does not exist."""
        self.current_login()
        accounts = self.accounts()
        await accounts.revoke_session(int(session_id))
        self.publish_after_commit(*accounts.events)
        await self.respond(Success())
