"""Email verification and password recovery over JSON: ``/user/email...`` and
``/user/password/forgot|reset``. The rules live in ``server.recovery.Recovery``; these handlers
parse, call and respond, then publish its events and send its mail once the transaction has
committed."""

from __future__ import annotations

from typing import Any, ClassVar

from tornado.routing import Rule

from schemas.common import Success
from schemas.recovery import (
    RESET_MAYBE_SENT,
    Accepted,
    EmailChange,
    EmailRead,
    EmailVerify,
    PasswordForgot,
    PasswordReset,
)
from server.accounts import WeakPassword
from server.errors import ApiError, FieldProblem
from server.handlers.base import ApiHandler, BaseHandler
from server.openapi import Operation
from server.permissions import LOGIN, PUBLIC, route
from server.recovery import Recovery


def recovery_for(handler: BaseHandler) -> Recovery:
    """A ``Recovery`` in the handler's transaction whose events and mail go out after commit."""
    recovery = Recovery(
        handler.db,
        handler.services,
        client_ip=handler.request.remote_ip,
        language=handler.language(),
    )

    async def deliver() -> None:
        for event in recovery.events:
            await handler.services.invalidation.publish(event)
        for mail in recovery.outbox:
            # In the background: the answer must not wait for (or reveal) the mail server.
            handler.services.spawn(handler.services.mailer.send(mail))

    handler.after_commit(deliver)
    return recovery


class RecoveryApiHandler(ApiHandler):
    """Shared by the handlers of this module."""

    def recovery(self) -> Recovery:
        """See ``recovery_for``."""
        return recovery_for(self)


class EmailHandler(RecoveryApiHandler):
    """``PUT /user/email``: set, change or remove the caller's address."""

    operations: ClassVar[dict[str, Operation]] = {
        "PUT": Operation(
            "Set, change (null: remove) the email address; a new one is sent a verification link",
            EmailRead,
            request=EmailChange,
            errors=(403, 409, 429),
            description="The address is stored stripped and lower-cased. A changed address is "
            "unverified until the link mailed to it is followed (valid "
            "`MSERVICES_EMAIL_VERIFY_HOURS`, once); the same address again changes nothing. "
            "409 `email_taken` when another account holds it. `pwd` is the current password: "
            "403 `wrong_password` when it is not, 429 while wrong guesses back off (as logins).",
            tags=("user",),
        )
    }

    async def put(self) -> None:
        """Change the address and mail the verification link after commit."""
        body = self.parse(EmailChange)
        user = await self.recovery().change_email(
            self.current_login(), body.email, password=body.pwd
        )
        await self.respond(EmailRead(email=user.email, email_verified=user.email_verified))


class EmailVerificationRequestHandler(RecoveryApiHandler):
    """``POST /user/email/verification``: mail a new verification link."""

    operations: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Send a new verification link to the caller's address (older links stop working)",
            Success,
            status=202,
            errors=(409,),
            description="409 `no_email` without an address, `email_already_verified` when it "
            "is verified.",
            tags=("user",),
        )
    }

    async def post(self) -> None:
        """Issue and mail a new link."""
        await self.recovery().request_verification(self.current_login().principal)
        await self.respond(Success(), status=202)


class EmailVerifyHandler(RecoveryApiHandler):
    """``POST /user/email/verify``: follow a verification link."""

    operations: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Confirm an email address with the token of the link mailed to it",
            EmailRead,
            request=EmailVerify,
            description="400 `invalid_link` when the token is unknown, expired, already used, "
            "or the account's address changed since it was sent.",
            tags=("user",),
        )
    }

    async def post(self) -> None:
        """Consume the token and mark the address verified."""
        body = self.parse(EmailVerify)
        user = await self.recovery().verify_email(body.token)
        await self.respond(EmailRead(email=user.email, email_verified=user.email_verified))


class PasswordForgotHandler(RecoveryApiHandler):
    """``POST /user/password/forgot``: ask for a reset link."""

    operations: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Ask for a password reset link (the answer is the same for every address)",
            Accepted,
            status=202,
            request=PasswordForgot,
            errors=(429,),
            description="A link (valid `MSERVICES_PASSWORD_RESET_HOURS`, once) is mailed only "
            "to the *verified* address of an active account; the answer does not say whether "
            "one exists. One client IP may ask `MSERVICES_RESET_PER_IP` times per "
            "`MSERVICES_RESET_WINDOW_SECONDS` (then 429 `too_many_reset_requests` with "
            "`Retry-After`); one address is sent at most `MSERVICES_RESET_PER_EMAIL` links per "
            "window (beyond that, still 202, nothing is sent).",
            tags=("user",),
        )
    }

    async def post(self) -> None:
        """Mail a link if the address is known; answer 202 either way."""
        body = self.parse(PasswordForgot)
        await self.recovery().request_password_reset(body.email)
        await self.respond(Accepted(detail=self.text(RESET_MAYBE_SENT)), status=202)


class PasswordResetHandler(RecoveryApiHandler):
    """``POST /user/password/reset``: set a new password with a reset link's token."""

    operations: ClassVar[dict[str, Operation]] = {
        "POST": Operation(
            "Set a new password with the token of a reset link; every session ends",
            Success,
            request=PasswordReset,
            description="400 `invalid_link` when the token is unknown, expired or used; 422 "
            "`weak_password` naming each policy rule broken (the link stays usable). On success "
            "every token of the account is revoked, in every process.",
            tags=("user",),
        )
    }

    async def post(self) -> None:
        """Check the policy, consume the token, store the password, end every session."""
        body = self.parse(PasswordReset)
        try:
            await self.recovery().reset_password(body.token, body.new_pwd)
        except WeakPassword as weak:
            raise ApiError(
                422,
                weak.code,
                weak.message,
                errors=[FieldProblem(weak.field, problem) for problem in weak.problems],
            ) from None
        await self.respond(Success())


def recovery_routes(deps: dict[str, Any]) -> list[Rule]:
    """The routes of this module, each with what it needs."""
    return [
        route(r"/user/email", EmailHandler, deps, name="user-email", need=LOGIN),
        route(
            r"/user/email/verification",
            EmailVerificationRequestHandler,
            deps,
            name="user-email-verification",
            need=LOGIN,
        ),
        route(
            r"/user/email/verify", EmailVerifyHandler, deps, name="user-email-verify", need=PUBLIC
        ),
        route(
            r"/user/password/forgot",
            PasswordForgotHandler,
            deps,
            name="user-password-forgot",
            need=PUBLIC,
        ),
        route(
            r"/user/password/reset",
            PasswordResetHandler,
            deps,
            name="user-password-reset",
            need=PUBLIC,
        ),
    ]
