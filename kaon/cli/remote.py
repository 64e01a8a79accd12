"""What every platform verb shares: where the platform is, which key to use, and a Client.

The URL and key come from, in order: ``--url``/``--key``, ``KAON_URL``/``KAON_API_KEY``,
then ``KAON_HOME/credentials.json`` (written by ``kaon login``, mode 0600). A saved key is
only sent to the URL it was saved with; a key given without a URL goes to the saved URL
(else ``http://127.0.0.1:8080``, ``kaon up``'s default).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from kaon.client import Client

DEFAULT_URL = "http://127.0.0.1:8080"

Url = Annotated[str | None, typer.Option(
    "--url", envvar="KAON_URL", show_default=False,
    help="Platform URL (else KAON_URL, else the one saved by `kaon login`).")]
Key = Annotated[str | None, typer.Option(
    "--key", envvar="KAON_API_KEY", show_default=False, show_envvar=False,
    help="API key kaon_… (else KAON_API_KEY, else the one saved by `kaon login`).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def credentials_path() -> Path:
    from kaon.config import get_settings

    return get_settings().home / "credentials.json"


def load_credentials() -> dict[str, str] | None:
    path = credentials_path()
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or not saved.get("url") or not saved.get("key"):
        return None
    return {"url": str(saved["url"]), "key": str(saved["key"])}


def save_credentials(url: str, key: str) -> Path:
    """Write url + key, readable by the owner only (0600, also when the file existed)."""
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "key": key}, f)
        f.write("\n")
    return path


def remove_credentials() -> bool:
    path = credentials_path()
    if path.is_file():
        path.unlink()
        return True
    return False


def resolve(url: str | None, key: str | None) -> tuple[str, str]:
    """(url, key) from the options/environment, then the saved credentials."""
    from kaon.platform.errors import AuthError

    saved = load_credentials()
    if key is None and saved and (url is None or _same(url, saved["url"])):
        url, key = saved["url"], saved["key"]
    elif url is None and saved:
        url = saved["url"]  # a key given alone goes to the saved platform
    if key is None:
        where = f" for {url}" if url else ""
        raise AuthError(f"Not logged in: no API key{where}.",
                        hint="Run `kaon login --url URL --key KEY` (the key `kaon up` printed "
                             "on first start), or set KAON_URL and KAON_API_KEY.")
    return (url or DEFAULT_URL).rstrip("/"), key


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def connect(url: str | None, key: str | None) -> Client:
    from kaon.client import Client

    base, secret = resolve(url, key)
    return Client(base, api_key=secret, timeout=60.0)


def when(value: Any) -> str:
    """An ISO timestamp from the API as ``YYYY-MM-DD HH:MM`` (UTC); '' for None."""
    return str(value)[:16].replace("T", " ") if value else ""


def money(cents: int | None, currency: str = "usd") -> str:
    if cents is None:
        return ""
    sign = "-" if cents < 0 else ""
    symbol = "$" if currency == "usd" else f"{currency.upper()} "
    whole, part = divmod(abs(int(cents)), 100)  # integers: exact at any size
    return f"{sign}{symbol}{whole:,}.{part:02d}"
