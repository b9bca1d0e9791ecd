"""Arguments built from named values (formats whose arguments are not JSON text): the JSON
object text grows one finished value at a time, so every prefix streamed stays a prefix."""

from __future__ import annotations

import json
from typing import Any


def arguments_prefix(pairs: list[tuple[str, Any]], closed: bool) -> str:
    """``{"k": v, "k2": v2`` and, once the call is closed, the final ``}``. Raises TypeError
    or ValueError for a value JSON cannot hold."""
    body = ", ".join(
        f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False, allow_nan=False)}"
        for k, v in pairs
    )
    return "{" + body + ("}" if closed else "")
