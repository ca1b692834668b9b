"""Is the Hugging Face hub reachable, and which local name did a user mean?

A name that is neither built in nor local goes to the hub, whose client retries for tens of seconds
before it gives up when the machine is offline. Asking once, in about a second, lets an unknown model
or data set name fail at once with a suggestion instead.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
import threading
from collections.abc import Iterable
from urllib.parse import urlparse

PROBE_SECONDS = 1.0
"""How long the connectivity probe may take; name resolution included (it runs in a thread)."""


def offline_reason() -> str | None:
    """Why the hub cannot be reached (None: it can)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    return _probe(urlparse(constants.ENDPOINT).hostname or "huggingface.co")


@functools.cache
def _probe(host: str) -> str | None:
    """One TCP connection attempt to the hub, at most once per process and host."""
    result: list[str | None] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=PROBE_SECONDS).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{host} is unreachable ({exc.strerror or exc})")

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo ignores socket timeouts
    thread.start()
    thread.join(PROBE_SECONDS)
    return result[0] if result else f"{host} did not answer within {PROBE_SECONDS:g} s"


def closest(name: str, candidates: Iterable[str]) -> str:
    """' Did you mean X?' for the candidate nearest to `name`, or '' when none is near."""
    candidates = list(candidates)
    match = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=1, cutoff=0.6)
    if not match:
        return ""
    original = next(c for c in candidates if c.lower() == match[0])
    return f" Did you mean {original!r}?"
