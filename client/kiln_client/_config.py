"""Where the SDK finds the server and the token when they are not passed.

In order: the arguments, then ``KILN_URL`` / ``KILN_TOKEN``, then the config file that
``kiln login`` writes (``$KILN_CONFIG`` if set, else ``kiln/config.json`` in the user's
config directory: ``$XDG_CONFIG_HOME`` or ``~/.config``), then http://127.0.0.1:8000
and no token. The saved token is used only for the server it was saved with. The file
holds a secret, so it is written with mode 0600.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_URL", "Config", "config_path", "forget_config", "load_config", "resolve",
           "save_config"]

DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Config:
    """What ``kiln login`` saved."""

    url: str | None = None
    token: str | None = None


def config_path() -> Path:
    """The config file's path (it need not exist)."""
    if os.environ.get("KILN_CONFIG"):
        return Path(os.environ["KILN_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "kiln" / "config.json"


def load_config() -> Config:
    """The saved config, or an empty one if there is none. A file that is not the JSON
    ``kiln login`` writes raises ValueError naming the file."""
    path = config_path()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return Config()
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the Kiln config file {path}: {e}") from None
    if not isinstance(raw, dict) or not all(isinstance(raw.get(k), (str, type(None)))
                                            for k in ("url", "token")):
        raise ValueError(f"the Kiln config file {path} is not an object with string "
                         f"'url' and 'token'; run `kiln login` again")
    return Config(url=raw.get("url"), token=raw.get("token"))


def save_config(url: str, token: str) -> Path:
    """Save the server and token for later clients (mode 0600, only the owner reads it)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token}, f, indent=2)
    os.chmod(tmp, 0o600)  # O_CREAT's mode is masked by the umask
    os.replace(tmp, path)
    return path


def forget_config() -> bool:
    """Delete the saved server and token (``kiln logout``); whether there was any."""
    path = config_path()
    existed = path.exists()
    path.unlink(missing_ok=True)
    return existed


def resolve(url: str | None, token: str | None) -> tuple[str, str | None]:
    """The server URL and token to use: arguments, environment, config file, default."""
    url = (url or os.environ.get("KILN_URL") or "").rstrip("/") or None
    token = token or os.environ.get("KILN_TOKEN") or None
    if url is None or token is None:
        saved = load_config()
        saved_url = saved.url.rstrip("/") if saved.url else None
        # The saved token goes only to the server it was saved for: never leak it to
        # another one named by an argument or KILN_URL.
        if token is None and (url is None or url == saved_url):
            token = saved.token
        url = url or saved_url
    return url or DEFAULT_URL, token
