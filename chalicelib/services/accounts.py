"""Accounts and API keys: keys are shown once, kept as a hash, found by a public prefix.

A key reads ``mp_<key_id>_<secret>``. The key id is the lookup prefix; the store keeps only the sha256 of
the whole key, compared in constant time. 256 bits of secret make a slow hash unnecessary.

A miss is one fixed error per kind ("no such account", "no such API key") whether the id does not exist or
belongs to another account, so the answers are no existence oracle.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable

from chalicelib.core.errors import ConfigError, Conflict, Forbidden, NotFound, Unauthorized
from chalicelib.core.ports import AccountStore, Clock, SecretSource
from chalicelib.core.records import Account, ApiKey
from chalicelib.services.cache import TtlCache
from chalicelib.settings import REVOCATION_WINDOW_S

log = logging.getLogger(__name__)

KEY_FORMAT = re.compile(r"^mp_(?P<key_id>[a-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
KEY_ID = re.compile(r"^[a-z0-9]{12}$")
ACCOUNT_ID = re.compile(r"^acct_[a-z0-9]{16}$")
BOOTSTRAP_ADMIN_ID = "acct_0000000000admin"
BOOTSTRAP_KEY = "bootstrap admin key"

ADMIN_RETRY_S = 10.0
"""After the admin key could not be read or bootstrapped, how long until the next attempt."""


def no_account() -> NotFound:
    return NotFound("no such account")


def no_key() -> NotFound:
    return NotFound("no such API key")


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    return key_id, f"mp_{key_id}_{secrets.token_urlsafe(32)}"


class AccountService:
    def __init__(
        self,
        store: AccountStore,
        clock: Clock,
        *,
        cache_s: float = 0.0,
        admin_key: SecretSource | None = None,
        admin_key_ttl_s: float = 300.0,
        monotonic: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """``cache_s``: how long a verified key's account is kept (a revocation made here clears it),
        capped at half of ``REVOCATION_WINDOW_S``. ``admin_key``: where the bootstrap admin key is read,
        on the first ``authenticate`` (never for a service that only deploys) and again every
        ``admin_key_ttl_s``, so rotating the secret takes effect without a cold start."""
        self.store = store
        self.clock = clock
        self.admin_key = admin_key
        self.admin_key_ttl_s = admin_key_ttl_s
        self.monotonic = monotonic
        ttl = min(cache_s, REVOCATION_WINDOW_S / 2)
        self._verified: TtlCache[str, Account] = (
            TtlCache(ttl, clock=monotonic, spawn=spawn) if spawn else TtlCache(ttl, clock=monotonic)
        )
        self._admin_lock = threading.Lock()
        self._admin_token: str | None = None
        self._admin_due = float("-inf")

    def create_account(self, caller: Account, name: str, *, is_admin: bool = False) -> tuple[Account, str]:
        """An admin creates an account; its first key is returned once, in clear."""
        self._require_admin(caller)
        account = Account(
            account_id="acct_" + secrets.token_hex(8),
            name=name,
            is_admin=is_admin,
            created_at=self.clock(),
        )
        self.store.put_account(account)
        token, _ = self.issue_key(caller, account.account_id, description="first key")
        return account, token

    def issue_key(self, caller: Account, account_id: str, *, description: str = "") -> tuple[str, ApiKey]:
        self.get_account(caller, account_id)  # never a key for an account that does not exist
        key_id, token = _new_token()
        key = ApiKey(
            key_id=key_id,
            account_id=account_id,
            secret_hash=hash_key(token),
            created_at=self.clock(),
            description=description,
        )
        self.store.put_key(key)
        return token, key

    def authenticate(self, token: str | None) -> Account:
        """The account behind a bearer token; Unauthorized for anything else, saying nothing more."""
        if token and token.lower().startswith("bearer "):
            token = token[7:].strip()
        match = KEY_FORMAT.match(token or "")
        if match is None:
            raise Unauthorized("missing or malformed API key", hint="send Authorization: Bearer mp_...")
        secret_hash = hash_key(token or "")
        self._ensure_admin()

        def verify() -> Account:
            try:
                key = self.store.get_key(match["key_id"])
                if not hmac.compare_digest(key.secret_hash, secret_hash) or key.revoked_at:
                    raise Unauthorized("invalid API key")
                return self.store.get_account(key.account_id)
            except NotFound:
                raise Unauthorized("invalid API key") from None

        return self._verified.get(secret_hash, verify)

    def get_account(self, caller: Account, account_id: str) -> Account:
        self._require_self_or_admin(caller, account_id)
        try:
            return self.store.get_account(account_id)
        except NotFound:
            raise no_account() from None

    def list_accounts(self, caller: Account) -> list[Account]:
        self._require_admin(caller)
        return self.store.list_accounts()

    def list_keys(self, caller: Account, account_id: str) -> list[ApiKey]:
        self.get_account(caller, account_id)
        return self.store.list_keys(account_id)

    def revoke_key(self, caller: Account, key_id: str) -> ApiKey:
        if not KEY_ID.fullmatch(key_id):
            raise no_key()
        try:
            key = self.store.get_key(key_id)
        except NotFound:
            raise no_key() from None
        if key.account_id != caller.account_id and not caller.is_admin:
            raise no_key()
        revoked = self.store.revoke_key(key_id, self.clock())
        self._verified.clear()
        return revoked

    def bootstrap_admin(self, token: str) -> Account:
        """Make ``token`` the admin key and revoke every bootstrap key made before it (a rotation).

        Idempotent, so every cold start may call it, concurrently too. Bootstrap keys are ordered by
        (created_at, key_id): a process still holding an older key never revokes a newer one, and a
        bootstrap key revoked through the API stays revoked.
        """
        match = KEY_FORMAT.match(token)
        if match is None:
            raise ConfigError("the configured admin key is malformed", hint="generate one: modelport keygen")
        admin = Account(account_id=BOOTSTRAP_ADMIN_ID, name="admin", is_admin=True, created_at=self.clock())
        try:
            self.store.put_account(admin)
        except Conflict:
            admin = self.store.get_account(BOOTSTRAP_ADMIN_ID)
        key = ApiKey(
            key_id=match["key_id"],
            account_id=admin.account_id,
            secret_hash=hash_key(token),
            created_at=self.clock(),
            description=BOOTSTRAP_KEY,
        )
        try:
            self.store.put_key(key)
        except Conflict:
            key = self.store.get_key(key.key_id)
            if key.account_id != BOOTSTRAP_ADMIN_ID or not hmac.compare_digest(
                key.secret_hash, hash_key(token)
            ):
                raise Conflict("the admin key id is taken by another key") from None
        if key.revoked_at is not None:
            log.warning("the configured admin key %s was revoked; it stays revoked", key.key_id)
            return admin
        for old in self.store.list_keys(BOOTSTRAP_ADMIN_ID):
            if (
                old.description == BOOTSTRAP_KEY
                and old.revoked_at is None
                and (old.created_at, old.key_id) < (key.created_at, key.key_id)
            ):
                self.store.revoke_key(old.key_id, self.clock())
                log.info("admin key %s rotated: %s revoked", key.key_id, old.key_id)
        self._verified.clear()
        return admin

    def _ensure_admin(self) -> None:
        """Bootstrap the configured admin key when first needed and whenever its value changes.

        A failure (the secret missing, its service down) is logged and retried after ``ADMIN_RETRY_S``;
        it never stops other accounts' keys from working.
        """
        if self.admin_key is None or self.monotonic() < self._admin_due:
            return
        with self._admin_lock:
            now = self.monotonic()
            if now < self._admin_due:
                return
            try:
                token = self.admin_key.read()
                if token != self._admin_token:
                    self.bootstrap_admin(token)
                    self._admin_token = token
                self._admin_due = now + self.admin_key_ttl_s
            except Exception as exc:
                log.error(
                    "the admin key was not bootstrapped (next attempt in %.0f s): %s", ADMIN_RETRY_S, exc
                )
                self._admin_due = now + min(ADMIN_RETRY_S, self.admin_key_ttl_s)

    @staticmethod
    def _require_admin(caller: Account) -> None:
        if not caller.is_admin:
            raise Forbidden("only an admin account can do this")

    @staticmethod
    def _require_self_or_admin(caller: Account, account_id: str) -> None:
        if caller.account_id != account_id and not caller.is_admin:
            raise no_account()


def generate_key() -> str:
    """A fresh key in the right format, e.g. for the bootstrap admin (``modelport keygen``)."""
    return _new_token()[1]
