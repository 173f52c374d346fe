"""Accounts and API keys: keys are shown once, kept as a hash, found by a public prefix.

A key reads ``mp_<key_id>_<secret>``. The key id is the lookup prefix; the store keeps only the sha256 of
the whole key, compared in constant time. 256 bits of secret make a slow hash unnecessary.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from chalicelib.core.errors import Conflict, Forbidden, NotFound, Unauthorized
from chalicelib.core.ports import AccountStore, Clock
from chalicelib.core.records import Account, ApiKey
from chalicelib.services.cache import TtlCache

KEY_FORMAT = re.compile(r"^mp_(?P<key_id>[a-z0-9]{12})_(?P<secret>[A-Za-z0-9_-]{43})$")
ACCOUNT_ID = re.compile(r"^acct_[a-z0-9]{16}$")
BOOTSTRAP_ADMIN_ID = "acct_0000000000admin"


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
    return key_id, f"mp_{key_id}_{secrets.token_urlsafe(32)}"


class AccountService:
    def __init__(self, store: AccountStore, clock: Clock, *, cache_s: float = 0.0) -> None:
        """``cache_s``: how long a verified key's account is kept (a revocation made here clears it)."""
        self.store = store
        self.clock = clock
        self._verified: TtlCache[str, Account] = TtlCache(cache_s)

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
        self._require_self_or_admin(caller, account_id)
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

        def verify() -> Account:
            try:
                key = self.store.get_key(match["key_id"])
            except NotFound:
                raise Unauthorized("invalid API key") from None
            if not hmac.compare_digest(key.secret_hash, secret_hash) or key.revoked_at:
                raise Unauthorized("invalid API key")
            return self.store.get_account(key.account_id)

        return self._verified.get(secret_hash, verify)

    def get_account(self, caller: Account, account_id: str) -> Account:
        self._require_self_or_admin(caller, account_id)
        return self.store.get_account(account_id)

    def list_accounts(self, caller: Account) -> list[Account]:
        self._require_admin(caller)
        return self.store.list_accounts()

    def list_keys(self, caller: Account, account_id: str) -> list[ApiKey]:
        self._require_self_or_admin(caller, account_id)
        return self.store.list_keys(account_id)

    def revoke_key(self, caller: Account, key_id: str) -> ApiKey:
        key = self.store.get_key(key_id)
        if key.account_id != caller.account_id and not caller.is_admin:
            raise NotFound(f"no key {key_id!r}")
        revoked = self.store.revoke_key(key_id, self.clock())
        self._verified.clear()
        return revoked

    def bootstrap_admin(self, token: str) -> Account:
        """Make sure the configured admin key works; idempotent, so every cold start may call it."""
        match = KEY_FORMAT.match(token)
        if match is None:
            raise Unauthorized("the configured admin key is malformed", hint="generate one: modelport keygen")
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
            description="bootstrap admin key",
        )
        try:
            self.store.put_key(key)
        except Conflict:
            if self.store.get_key(key.key_id).secret_hash != key.secret_hash:
                raise Conflict("the admin key id is taken by another key") from None
        return admin

    @staticmethod
    def _require_admin(caller: Account) -> None:
        if not caller.is_admin:
            raise Forbidden("only an admin account can do this")

    @staticmethod
    def _require_self_or_admin(caller: Account, account_id: str) -> None:
        if caller.account_id != account_id and not caller.is_admin:
            raise NotFound(f"no account {account_id!r}")


def generate_key() -> str:
    """A fresh key in the right format, e.g. for the bootstrap admin (``modelport keygen``)."""
    return _new_token()[1]
