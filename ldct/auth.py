"""Bearer tokens with roles: who may use the server, and as what.

A token is 256 random bits shown once, when it is made; the token file keeps only its SHA-256
(a token that random needs no slow hash) with a name and a role, and lookups compare every
stored hash in constant time. The file is ``$LDCT_AUTH_FILE`` (default
``~/.config/ldct/tokens.json``), written atomically with mode 0600; the server rereads it when
it changes, so a revoked token stops working at once. A reader token is bound to one study and
one reader id of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)
AUTH_FILE_ENV = "LDCT_AUTH_FILE"
ROLES = ("radiologist", "reader", "coordinator", "admin")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


_WARNED: set[tuple[str, int]] = set()  # (token file, mode) already reported as not private


class AuthError(ValueError):
    """A token command that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class Identity:
    """Who a valid token belongs to (a reader's token also names its study and reader id)."""

    name: str
    role: str
    study: str = ""
    reader: str = ""


def auth_file() -> Path:
    """The token file: ``$LDCT_AUTH_FILE``, else ~/.config/ldct/tokens.json."""
    return Path(os.environ.get(AUTH_FILE_ENV) or Path.home() / ".config" / "ldct" / "tokens.json")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """The token file: add, list, revoke, and identify a presented token."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else auth_file()
        self._entries: list[dict[str, str]] = []
        self._stamp: tuple[int, int] | None = None

    # -- reading ----------------------------------------------------------------------------
    def _load(self) -> list[dict[str, str]]:
        """The entries, reread only when the file changed (revocations apply at once)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._entries, self._stamp = [], None
            return self._entries
        if stat.st_mode & 0o077 and (str(self.path), stat.st_mode) not in _WARNED:
            _WARNED.add((str(self.path), stat.st_mode))
            logger.warning("the token file %s can be read or written by other users (mode %o); "
                           "`chmod 600` it: its hashes let anyone who copies it try tokens "
                           "offline, and a writer can add their own", self.path,
                           stat.st_mode & 0o777)
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            data = json.loads(self.path.read_text() or "{}")
            self._entries, self._stamp = list(data.get("tokens", [])), stamp
        return self._entries

    def identities(self) -> list[Identity]:
        """Every token's owner (never the token: only its hash is kept)."""
        return [Identity(e["name"], e["role"], e.get("study", ""), e.get("reader", ""))
                for e in self._load()]

    def identify(self, token: str) -> Identity | None:
        """The owner of ``token``, or None; every stored hash is compared (constant time)."""
        presented = _digest(token) if token else ""
        found = None
        for entry in self._load():
            if hmac.compare_digest(presented, entry["sha256"]) and presented:
                found = entry
        if found is None:
            return None
        return Identity(found["name"], found["role"], found.get("study", ""),
                        found.get("reader", ""))

    # -- writing ----------------------------------------------------------------------------
    def add(self, name: str, role: str) -> str:
        """Make a token for ``name`` with ``role`` (any but reader, whose tokens studies make
        with `replace_reader`); returns it (the only time it is seen)."""
        if not NAME.fullmatch(name):
            raise AuthError(f"token name {name[:80]!r}: use 1-64 letters, digits, '.', '_', '@' "
                            "or '-', starting with a letter or digit")
        if role not in ROLES or role == "reader":
            raise AuthError(f"role {role[:20]!r}: choose one of "
                            f"{', '.join(r for r in ROLES if r != 'reader')} (reader tokens are "
                            "made by `ldct study create` or `ldct study add-reader`)")
        token = secrets.token_urlsafe(32)
        with self._locked() as entries:
            if any(e["name"] == name for e in entries):
                raise AuthError(f"a token named {name!r} exists already; revoke it first "
                                f"(`ldct token revoke {name}`) or choose another name")
            entries.append(_entry(name, role, token))
        return token

    def replace_reader(self, study: str, reader: str) -> str:
        """A new token for ``reader`` of ``study``, in place of that reader's earlier one and
        of nothing else: reader tokens are named ``reader:STUDY/READER``, a name no other
        role's token can have (':' and '/' are not allowed in theirs)."""
        name = reader_token_name(study, reader)
        token = secrets.token_urlsafe(32)
        with self._locked() as entries:
            entries[:] = [e for e in entries if not (e["role"] == "reader" and
                                                     (e.get("study"), e.get("reader")) ==
                                                     (study, reader))]
            entries.append(_entry(name, "reader", token, study=study, reader=reader))
        return token

    def revoke(self, name: str) -> None:
        """Remove the token named ``name`` (it stops working at the server's next request)."""
        with self._locked() as entries:
            kept = [e for e in entries if e["name"] != name]
            if len(kept) == len(entries):
                raise AuthError(f"no token named {name!r}; `ldct token list` shows the names")
            entries[:] = kept

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[dict[str, str]]]:
        """The entries to change under a file lock, written back atomically (mode 0600)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._stamp = None
            entries = list(self._load())
            yield entries
            partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "w") as out:
                json.dump({"tokens": entries}, out, indent=1)
            os.replace(partial, self.path)
            self._stamp = None


def reader_token_name(study: str, reader: str) -> str:
    """The name of a reader's token: in a namespace of its own."""
    if not (re.fullmatch(r"[a-z0-9-]{1,64}", study) and NAME.fullmatch(reader)):
        raise AuthError(f"study {study[:80]!r} / reader {reader[:80]!r}: not a study id and "
                        "reader id")
    return f"reader:{study}/{reader}"


def _entry(name: str, role: str, token: str, **binding: str) -> dict[str, str]:
    return {"name": name, "role": role, "sha256": _digest(token), **binding,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def public(identity: Identity) -> dict[str, str]:
    """An identity as a listing shows it (no secret in it)."""
    return {k: v for k, v in asdict(identity).items() if v}
