"""``faceid scan --output FILE``: JSON lines appended as photos are done, so a scan that was
stopped (or whose machine died) starts again where it was: photos already in FILE are skipped.

Each record is one line, written and flushed at once; a line cut short by a crash is removed
when the file is opened again, so the file always holds whole records only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO


class ResultsFile:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.done: set[str] = set()
        if self.path.is_file():
            data = self.path.read_bytes()
            whole = data[: data.rfind(b"\n") + 1]
            if len(whole) != len(data):  # the last record was cut short
                with open(self.path, "r+b") as handle:
                    handle.truncate(len(whole))
            for number, line in enumerate(whole.decode("utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    self.done.add(str(json.loads(line)["path"]))
                except (ValueError, KeyError, TypeError):
                    raise ValueError(f"{self.path} line {number} is not a faceid scan record; "
                                     "give --output a new file or one an earlier scan "
                                     "wrote") from None
        self._handle: IO[str] = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, object]) -> None:
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()
        self.done.add(str(record["path"]))

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
