"""JSONL sink: one SPEC §7 record per line, to a file or to standard output.

A file is not transactional with the ledger, so the sink reports its length after every batch
(``commit_state``) and the delivery engine saves it with the batch's results. On restart,
``restore`` cuts whatever lies beyond the committed length (a torn line, or lines whose
ledger commit never happened): those records are still pending and are written again, so
after a crash at any moment each record appears exactly once. A record whose content changed
later (a re-opened call) is appended again with the same ``key``: readers keep the last line.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from typing import Any, Mapping, Sequence

from celsync.config import JsonlSinkConfig
from celsync.sinks.base import Delivery, Outcome, Result, Sink

log = logging.getLogger(__name__)


def encode(batch: Sequence[Delivery]) -> bytes:
    """The batch as JSON lines, keys in the record's own order (``key`` first)."""
    return b"".join(
        json.dumps(d.record, ensure_ascii=False, default=str).encode("utf-8") + b"\n" for d in batch
    )


class JsonlSink(Sink):
    def __init__(self, cfg: JsonlSinkConfig) -> None:
        self.name = cfg.sink_name
        self.batch_size = cfg.batch_size
        self.path = cfg.path
        self._fsync = cfg.fsync
        self._fd: int | None = None  # unbuffered: a failed write leaves nothing behind to flush
        self._length = 0
        self._regular = True  # a pipe or /dev/null can be neither synced nor cut back

    @property
    def _stdout(self) -> bool:
        return self.path == "-"

    def _open(self) -> int:
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OSError(
                    exc.errno, f"jsonl sink {self.name!r}: cannot open {self.path}: {exc.strerror} "
                    "(check the sink's 'path'; its directory must exist)"
                ) from None
            st = os.fstat(self._fd)
            self._regular = stat.S_ISREG(st.st_mode)
            self._length = st.st_size
        return self._fd

    def restore(self, state: Mapping[str, Any] | None) -> None:
        if self._stdout:
            return
        fd = self._open()
        if not self._regular:
            return
        size = os.fstat(fd).st_size
        committed = None if state is None else state.get("length")
        if committed is not None and size > committed:
            log.warning(
                "%s: cutting %d bytes from %s written after the last commit; those records are "
                "written again", self.name, size - committed, self.path,
            )
            os.ftruncate(fd, committed)
            os.fsync(fd)
        elif committed is not None and size < committed:
            log.warning(
                "%s: %s has %d bytes, less than the %d celsync last committed: was it rotated or "
                "truncated? Appending from its current end", self.name, self.path, size, committed,
            )
        self._length = os.fstat(fd).st_size

    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        data = encode(batch)
        if self._stdout:
            out = sys.stdout.buffer
            out.write(data)
            out.flush()
            return [Result(d.key, Outcome.DELIVERED) for d in batch]
        fd = self._open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if self._fsync and self._regular:
                os.fsync(fd)
        except OSError as exc:  # disk full or gone: undo the partial write, try again later
            error = f"cannot write {self.path}: {exc.strerror or exc}"
            try:
                if self._regular:
                    os.ftruncate(fd, self._length)
            except OSError:
                log.error("%s: cannot cut a partial write from %s either", self.name, self.path)
            return [Result(d.key, Outcome.RETRY, error) for d in batch]
        self._length = os.fstat(fd).st_size
        return [Result(d.key, Outcome.DELIVERED) for d in batch]

    def commit_state(self) -> Mapping[str, Any] | None:
        return None if self._stdout else {"length": self._length}

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
