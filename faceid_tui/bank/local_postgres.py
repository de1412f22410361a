"""A PostgreSQL 16 with pgvector on this machine, from PyPI (``pgserver``): for tests and for
trying a shared bank on one box (``faceid postgres``). Production uses any PostgreSQL ≥ 14
with the pgvector extension; faceid only needs its URL.

The server keeps running after the process that started it exits (so stations can come and
go); :func:`stop_local_postgres` stops it."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

from faceid_tui.errors import BankError

DEFAULT_DATA_DIR = Path("faceid-postgres")


def _pgserver():  # type: ignore[no-untyped-def]
    try:
        import pgserver
    except ImportError:
        raise BankError("a local PostgreSQL needs pgserver: pip install 'faceid-tui[cluster]' "
                        "(or point --bank at any PostgreSQL with pgvector)") from None
    return pgserver


def start_local_postgres(data_dir: Path = DEFAULT_DATA_DIR, *, database: str = "faceid",
                         keep_running: bool = True) -> str:
    """Start (or reuse) the server whose data lives in ``data_dir``, create ``database`` if
    needed, and return its URL. ``keep_running=False`` stops it when this process exits."""
    data_dir = Path(data_dir).expanduser().absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # platformdirs warns where XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore", UserWarning)
        server = _pgserver().get_server(data_dir,
                                        cleanup_mode=None if keep_running else "stop")
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", database):
        raise BankError(f"database name {database!r}: use lowercase letters, digits and _")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "1 row" not in exists:
        server.psql(f"CREATE DATABASE {database};")
    return database_url(server.get_uri(), database)


def database_url(server_url: str, database: str) -> str:
    """``server_url`` (pgserver's, on its ``postgres`` database) pointing at ``database``."""
    return re.sub(r"/postgres(\?|$)", f"/{database}\\1", server_url, count=1)


def stop_local_postgres(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    """Stop the server of ``data_dir`` (when this process exits); False when none was
    running there."""
    data_dir = Path(data_dir).expanduser().absolute()
    if not (data_dir / "postmaster.pid").is_file():
        return False
    # pgserver stops a server when the last process holding it in "stop" mode exits.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _pgserver().get_server(data_dir, cleanup_mode="stop")
    return True
