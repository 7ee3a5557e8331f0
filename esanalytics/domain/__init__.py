"""The write side: deciders, the command handler, snapshots, and two example domains."""

from esanalytics.domain.batch import BatchCommand, BatchReport, Rejection, handle_batch
from esanalytics.domain.decider import CommandRejected, Decider, EventCodec, Upcaster
from esanalytics.domain.duties import SegregationRule
from esanalytics.domain.handler import (
    CommandContext,
    CommandHandler,
    CommandResult,
    Loaded,
    SnapshotStore,
)

__all__ = [
    "BatchCommand",
    "BatchReport",
    "CommandContext",
    "CommandHandler",
    "CommandRejected",
    "CommandResult",
    "Decider",
    "EventCodec",
    "Loaded",
    "Rejection",
    "SegregationRule",
    "SnapshotStore",
    "Upcaster",
    "handle_batch",
]
