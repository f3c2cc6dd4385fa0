"""Secret material out of every line the webhook writes: logs, Events, admission warnings,
error messages.

Two nets, because a remote endpoint may echo anything back (a registry's 403 body, an
AWS error, a proxy's page), and the webhook cannot tell a secret from a word by its
shape alone:

- **the values it holds**: every password, key, client secret and token the webhook
  reads or mints is remembered here (``remember``) with the forms it travels in (base64
  of ``user:password`` as in a dockerconfigjson ``auth`` or an ECR authorization token,
  URL-encoded as in a form body, JSON-escaped), and any occurrence is replaced;
- **token shapes**: JWTs, base64 JSON (a dockerconfigjson, a JWT part), base64 of
  ``AWS:…`` (an ECR authorization token), 40-character AWS-style secret keys, and any
  long run of token characters that mixes upper case, lower case and digits.

What stays readable: names (DNS labels are lower case), GUIDs and AADSTS codes, AWS
access key ids (``AKIA…``/``ASIA…`` name a key, they are not one), ARNs and ARM ids.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from collections import OrderedDict

from webhook.telemetry.text import printable

#: What a redacted value becomes.
REDACTED = "<redacted>"
#: What a JWT becomes (the kind is worth knowing when reading an error).
TOKEN = "<token>"
#: Values shorter than this are not remembered: replacing every "admin" or "1234" in the
#: logs would hide more than it protects, and no credential the webhook mints is that short.
MIN_SECRET_LENGTH = 8
#: Forms remembered at most (a value travels in up to seven; oldest forgotten first): about
#: 150 secrets, where a config holds one per static secret and one per credential minted
#: that is not token-shaped (per-pod identities mint JWTs and base64 JSON, which the
#: shapes catch). Measured: with the table full a log line costs ~0.2 ms to scrub and a
#: change of the table ~0.1 s to take in (once, at the next line); 4,096 would cost 1.1 ms
#: a line and 0.45 s a change.
MAX_REMEMBERED = 1024

_JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
# base64 of a JSON object ('{"' is 'eyJ'), of 'AWS:' ('QVdTO', an ECR authorization token).
_B64_JSON_RE = re.compile(r"(?:eyJ|QVdTO)[A-Za-z0-9+/_=-]{8,}")
# An AWS secret access key: exactly 40 characters of base64 (with '/' and '+'), alone.
_AWS_SECRET_RE = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{40}(?![A-Za-z0-9+/=])")
# Any long run of token characters ('/' left out so ARM ids and paths stay whole) ...
_RUN_RE = re.compile(r"[A-Za-z0-9+_=-]{20,}")
# ... and anything at least 64 long whatever it mixes (hex keys, long opaque tokens).
_LONG = 64
_GUID_RE = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")


def _random_looking(text: str) -> bool:
    """Mixes upper case, lower case and digits: a random token nearly always does (a
    random 20-character base64 string lacks one of them with probability < 3 %), a name
    or a word nearly never does."""
    has_upper = has_lower = has_digit = False
    for ch in text:
        if ch.isupper():
            has_upper = True
        elif ch.islower():
            has_lower = True
        elif ch.isdigit():
            has_digit = True
    return has_upper and has_lower and has_digit


def _run(match: re.Match[str]) -> str:
    text = match.group(0)
    if _GUID_RE.fullmatch(text):
        return text
    if len(text) >= _LONG or _random_looking(text):
        return REDACTED
    return text


class Redactor:
    """The secret values to hide and the shapes to hide; thread-safe (credential
    providers may run in threads)."""

    def __init__(self, capacity: int = MAX_REMEMBERED) -> None:
        self.capacity = capacity
        self._values: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def remember(self, value: str | None, *, username: str = "") -> None:
        """Hide ``value`` (and its encodings) from now on. With ``username``, also the
        base64 of ``username:value`` (a dockerconfigjson ``auth``, an ECR token)."""
        if not value or len(value) < MIN_SECRET_LENGTH:
            return
        if _JWT_RE.fullmatch(value) or _B64_JSON_RE.fullmatch(value):
            # Its shape hides it (and its base64 with a username is a long mixed run):
            # per-pod identities mint one per ServiceAccount, and remembering each would
            # only churn the list.
            return
        forms = {
            value,
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value),
            json.dumps(value)[1:-1],
            printable(value),  # as a text log line, a warning or a message shows it
            base64.b64encode(value.encode()).decode().rstrip("="),
            base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
        }
        if username:
            forms.add(base64.b64encode(f"{username}:{value}".encode()).decode().rstrip("="))
        with self._lock:
            added = False
            for form in forms:
                if len(form) >= MIN_SECRET_LENGTH:
                    added |= form not in self._values
                    self._values[form] = None
                    self._values.move_to_end(form)  # kept longest: it is still in use
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)
            if added:  # the pattern is built again only for a new value
                self._pattern = None

    def _known(self) -> re.Pattern[str] | None:
        pattern = self._pattern
        if pattern is None:
            with self._lock:
                if not self._values:
                    return None
                # Longest first: a value that contains another is replaced whole.
                ordered = sorted(self._values, key=len, reverse=True)
                pattern = self._pattern = re.compile("|".join(map(re.escape, ordered)))
        return pattern

    def scrub(self, text: str) -> str:
        """``text`` with every remembered value and every token shape replaced."""
        known = self._known()
        if known is not None:
            text = known.sub(REDACTED, text)
        text = _JWT_RE.sub(TOKEN, text)
        text = _B64_JSON_RE.sub(REDACTED, text)
        text = _AWS_SECRET_RE.sub(_run, text)
        return _RUN_RE.sub(_run, text)


#: The process's one redactor: whatever any part of the webhook holds, every line is
#: scrubbed of it.
REDACTOR = Redactor()


def remember(value: str | None, *, username: str = "") -> None:
    REDACTOR.remember(value, username=username)


def scrub(text: str) -> str:
    return REDACTOR.scrub(text)
