"""What every destination implements, and what the delivery engine tells it.

A sink only talks to its destination. Which records to send, retries, backoff, dead letters
and the ledger are the delivery engine's job (``celsync.delivery``), so every sink gets the
same exactly-once guarantees.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass
from typing import Any, Mapping, Sequence


@dataclass(frozen=True, slots=True)
class Delivery:
    """One record to send to one sink.

    ``version`` grows by one each time the record's content changes (a re-opened call); with
    ``key`` it names one content version (webhook ids, Redis dedupe). ``record`` is the
    SPEC §7 JSON object (``CallRecord.to_dict()``).
    """

    sink: str
    key: str
    version: int
    fingerprint: str
    record: Mapping[str, Any]
    previously_delivered: bool = False  # an older version of this key reached the sink before


class Outcome(enum.Enum):
    DELIVERED = "delivered"  # durably accepted by the destination
    RETRY = "retry"  # not accepted; safe to send again later
    DEAD = "dead"  # will never be accepted as it is (validation, auth); goes to dead letters
    UNKNOWN = "unknown"  # may or may not have been accepted: reconcile before sending again


@dataclass(frozen=True, slots=True)
class Result:
    key: str
    outcome: Outcome
    error: str | None = None  # the destination's own message, secrets removed
    retry_after: float | None = None  # seconds the destination asked us to wait
    remote_id: str | None = None  # the destination's id for the record, if it gives one


class SinkDisabled(Exception):
    """The destination refused us as a whole (Kommo 403, webhook 410): stop this sink, alert.

    The delivery engine marks the sink disabled in the state DB; nothing is lost, the
    pending records wait until an operator re-enables it (``celsync deadletters retry``).
    """


class Sink(abc.ABC):
    """Base class of all sinks. Subclasses override ``send`` and, where needed, the rest."""

    #: unique name in the ledger (the config's ``name`` or its ``type``)
    name: str = "sink"
    #: most records per ``send`` call
    batch_size: int = 50

    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Called before any send with the last committed ``commit_state()`` (or None), and
        again after a batch whose outcome could not be committed (``send`` raised, or the
        state DB failed), so it must be safe to call more than once.

        A sink whose writes are not transactional with the ledger (a JSONL file) uses it to
        undo what was written but never committed (cut a torn tail).
        """

    @abc.abstractmethod
    def send(self, batch: Sequence[Delivery]) -> list[Result]:
        """Send a batch; return one Result per Delivery, in any order.

        Raise nothing for per-record failures: report them as Results. A raised exception
        counts as UNKNOWN for the whole batch (the engine reconciles before re-sending) —
        except ``SinkDisabled``.
        """

    def reconcile(self, batch: Sequence[Delivery]) -> list[Result]:
        """Decide deliveries whose outcome is unknown (a crash or a timeout mid-send).

        Return DELIVERED for those the destination has, RETRY for those it has not. The
        default suits sinks whose writes are idempotent by key: send again.
        """
        return [Result(d.key, Outcome.RETRY) for d in batch]

    def commit_state(self) -> Mapping[str, Any] | None:
        """Small JSON-able state saved in the same transaction as the batch's results."""
        return None

    def close(self) -> None:
        """Release connections and files."""
