"""The ``/user`` resource (seed §4): login, registration, profile, password, logout, sessions."""

from __future__ import annotations

import json
from typing import ClassVar

from repositories.audit import AuditRepository
from repositories.errors import NotFound
from repositories.models import utcnow
from repositories.tokens import TokenRepository
from repositories.users import UserRepository
from schemas.common import ErrorItem, Success
from schemas.user import (
    DEVICE_NAMES,
    AccountClose,
    LoginRequest,
    LoginResponse,
    MeResponse,
    PasswordChange,
    ProfileUpdate,
    RegisterRequest,
    SessionList,
    SessionRead,
    UserRead,
    UserResponse,
)
from server.accounts import (
    InvalidCredentials,
    issue_token,
    password_login,
    register,
    revoke_user_tokens,
    token_events,
    verify_password,
)
from server.errors import ApiError
from server.handlers.base import ApiHandler
from server.invalidation import Event
from server.logins import Login
from server.openapi import Operation
from server.security.policy import password_problems

PASSWORD_CHANGE_KEYS = frozenset({"old_pwd", "new_pwd"})


class UserApiHandler(ApiHandler):
    """Helpers shared by the ``/user`` handlers."""

    def client_ip(self) -> str:
        """The caller's address (the proxy's view when ``xheaders`` is on)."""
        return self.request.remote_ip or "unknown"

    def device(self, body: LoginRequest) -> str:
        """The device of a login: the seed's ``mobile_type``, or the User-Agent."""
        if body.mobile_type is not None:
            return DEVICE_NAMES[body.mobile_type]
        return (self.request.headers.get("User-Agent") or "unknown")[:64]

    def refuse_weak_password(
        self, password: str, *, field: str, name: str, old: str | None = None
    ) -> None:
        """422 naming each policy rule the password breaks."""
        problems = password_problems(password, name=name, old_password=old)
        if problems:
            raise ApiError(
                422,
                "weak_password",
                "the password does not meet the policy",
                errors=[ErrorItem(field=field, reason=problem) for problem in problems],
            )

    async def log_in(self, body: LoginRequest) -> None:
        """Check the password (throttled), issue a token and answer with it."""
        user = await password_login(
            self.services, self.db, name=body.name, password=body.pwd, client_ip=self.client_ip()
        )
        device = self.device(body)
        token, row = await issue_token(self.services, self.db, user, device=device)
        user.last_login_device = device
        await self.audit("login", user_id=user.id, actor=user.name, detail=device)
        await self.respond(
            LoginResponse(
                token=token, expires_at=row.expires_at, user=UserRead.model_validate(user)
            )
        )

    async def audit(
        self, action: str, *, user_id: int | None, actor: str | None, detail: str | None = None
    ) -> None:
        """Record ``action`` in this request's transaction."""
        await AuditRepository(self.db).add(
            action, user_id=user_id, actor=actor, detail=detail, client_ip=self.client_ip()
        )

    async def verify_own_password(self, login: Login, password: str, *, field: str) -> None:
        """Re-check the caller's password for a sensitive change (throttled like a login);
        a wrong one is 403 naming ``field``."""
        try:
            await verify_password(
                self.services,
                name=login.principal.name,
                password=password,
                client_ip=self.client_ip(),
            )
        except InvalidCredentials:
            raise ApiError(
                403,
                "wrong_password",
                "the current password is wrong",
                errors=[ErrorItem(field=field, reason="does not match the current password")],
            ) from None

    async def change_password(self, login: Login, change: PasswordChange) -> None:
        """Verify the old password, store the new one, revoke every other token."""
        await self.verify_own_password(login, change.old_pwd, field="old_pwd")
        self.refuse_weak_password(
            change.new_pwd, field="new_pwd", name=login.principal.name, old=change.old_pwd
        )
        user_id = login.principal.user_id
        await UserRepository(self.db).set_password_hash(
            user_id, await self.services.passwords.hash(change.new_pwd)
        )
        revoked = await revoke_user_tokens(self.db, user_id, except_id=login.token_id)
        await self.audit(
            "password_changed",
            user_id=user_id,
            actor=login.principal.name,
            detail=f"{len(revoked)} other sessions revoked",
        )
        self.publish_after_commit(*token_events(revoked))
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
            "Register an account",
            UserResponse,
            status=201,
            request=RegisterRequest,
            errors=(409, 429),
            description="The new account holds the role named by `MSERVICES_SIGNUP_ROLE`, when it "
            "exists. One client IP may register `MSERVICES_SIGNUP_PER_IP` accounts per "
            "`MSERVICES_SIGNUP_WINDOW_SECONDS`; beyond that 429 `too_many_signups` with "
            "`Retry-After`.",
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
        is taken, 429 when this address has registered too many accounts lately."""
        body = self.parse(RegisterRequest)
        self.refuse_weak_password(body.pwd, field="pwd", name=body.name)
        user = await register(
            self.services,
            self.db,
            name=body.name,
            password=body.pwd,
            mobile=body.mobile,
            city=body.city,
            client_ip=self.client_ip(),
        )
        await self.respond(UserResponse(user=UserRead.model_validate(user)), status=201)

    async def put(self) -> None:
        """Change name, mobile or city; a body of exactly ``old_pwd`` and ``new_pwd`` changes
        the password instead (seed: 修改口令)."""
        login = self.current_login()
        data = self.parse_json()
        if isinstance(data, dict) and set(data) == PASSWORD_CHANGE_KEYS:
            await self.change_password(login, self.validate(PasswordChange, data))
            return
        changes = self.validate(ProfileUpdate, data).model_dump(exclude_unset=True)
        user = await UserRepository(self.db).update(login.principal.user_id, changes)
        await self.audit(
            "profile_changed",
            user_id=user.id,
            actor=user.name,
            detail=", ".join(sorted(changes)),
        )
        self.publish_after_commit(Event("user", str(user.id)))
        await self.respond(UserResponse(user=UserRead.model_validate(user)))

    async def delete(self) -> None:
        """Log out: revoke the token this request was made with (seed: 注销)."""
        login = self.current_login()
        await TokenRepository(self.db).revoke(login.token_id)
        await self.audit("logout", user_id=login.principal.user_id, actor=login.principal.name)
        self.publish_after_commit(Event("token", login.token_hash))
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
        tree = await self.services.menus.tree_json_for(login.principal)
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
        login = self.current_login()
        await self.change_password(login, self.parse(PasswordChange))


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
        login = self.current_login()
        body = self.parse(AccountClose)
        await self.verify_own_password(login, body.pwd, field="pwd")
        user_id = login.principal.user_id
        await UserRepository(self.db).update(user_id, {"is_active": False})
        revoked = await revoke_user_tokens(self.db, user_id)
        await self.audit("account_closed", user_id=user_id, actor=login.principal.name)
        self.publish_after_commit(Event("user", str(user_id)), *token_events(revoked))
        await self.respond(Success())


class SessionsHandler(UserApiHandler):
    """``GET /user/sessions``: the caller's live logins."""

    operations: ClassVar[dict[str, Operation]] = {
        "GET": Operation("The caller's live sessions", SessionList, tags=("user",))
    }

    async def get(self) -> None:
        """List tokens that are neither revoked nor expired (idle or absolute)."""
        login = self.current_login()
        now = utcnow()
        idle = self.services.logins.idle
        items = [
            SessionRead(
                id=token.id,
                device=token.device,
                created_at=token.created_at,
                last_used_at=token.last_used_at,
                expires_at=token.expires_at,
                current=token.id == login.token_id,
            )
            for token in await TokenRepository(self.db).list_live(login.principal.user_id, now=now)
            if token.last_used_at + idle > now
        ]
        await self.respond(SessionList(items=items, count=len(items)))


class SessionHandler(UserApiHandler):
    """``DELETE /user/sessions/{id}``: revoke one of the caller's logins."""

    operations: ClassVar[dict[str, Operation]] = {
        "DELETE": Operation("Revoke one session", Success, tags=("user",))
    }

    async def delete(self, session_id: str) -> None:
        """Another user's session id is 404, like one that does not exist."""
        login = self.current_login()
        tokens = TokenRepository(self.db)
        token = await tokens.get_for_user(int(session_id), login.principal.user_id)
        if token.revoked_at is not None:
            raise NotFound(f"session {session_id} does not exist", code="session_not_found")
        await tokens.revoke(token.id)
        await self.audit(
            "session_revoked",
            user_id=login.principal.user_id,
            actor=login.principal.name,
            detail=f"session {token.id}",
        )
        self.publish_after_commit(Event("token", token.token_hash))
        await self.respond(Success())
