"""notebooks/07-audit-a-kafka-topic runs headless: its set-up cell starts a Kafka broker (the
mock cluster, held by its kernel), it produces the topic, imports it, answers its as-of
question and shows the audit trail of one key, re-runs the import with nothing new, draws two
charts as Vega 5 with a PNG, and writes nothing beside itself. While its kernel (and so the
broker) still runs, this test reads the topic with a plain consumer and checks the lake and
what the notebook showed against that reading."""

from __future__ import annotations

import json
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
from nbclient import NotebookClient

import esanalytics as esa
from esanalytics.engine import Session
from tests.kafka_broker import consume_all

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "07-audit-a-kafka-topic.ipynb"
CUT = pd.Timestamp("2025-03-20T12:00:00Z")


def _run(folder: Path) -> tuple[Any, list[dict[str, Any]], Path]:
    """The executed notebook, the topic as a plain consumer reads it (while the notebook's
    kernel, which holds the broker, still runs) and the notebook's lake."""
    book = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    client = NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    probe = nbformat.v4.new_code_cell(
        'print(json.dumps({"bootstrap": BOOTSTRAP, "lake": str(LAKE), "folder": str(folder)}))'
    )
    book.cells.append(probe)
    with client.setup_kernel():
        for index, cell in enumerate(book.cells):
            client.execute_cell(cell, index)
        where = json.loads(probe.outputs[0].text)
        records = consume_all(where["bootstrap"], ["orders"])
    return book, records, Path(where["lake"])


def _status(records: pd.DataFrame) -> pd.Series:
    """Each key's last status (the event type without ``Order``) among ``records``."""
    return records.groupby("key").status.last().sort_index()


def test_notebook_07_imports_the_topic_a_plain_consumer_reads(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder)
    book, records, lake = _run(folder)
    try:
        assert sorted(p.name for p in folder.iterdir()) == [NOTEBOOK.name]
        outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        assert not [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
        printed = "".join(o.text for o in outputs if o.output_type == "stream")
        shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)

        # the topic, as a plain consumer reads it: several partitions, keys, headers
        topic = pd.DataFrame(
            {
                "partition": r["partition"],
                "offset": r["offset"],
                "key": r["key"].decode(),
                "timestamp": r["timestamp"],
                "headers": {k: v.decode() for k, v in r["headers"]},
                "record": f"orders/{r['partition']}@{r['offset']}",
                **json.loads(r["value"]),
            }
            for r in records
        ).sort_values(["partition", "offset"], ignore_index=True)
        assert topic.partition.nunique() > 1
        assert len(topic) > 2000
        assert f"{len(topic):,} records produced to orders" in printed

        # the lake holds each record once, as the record says
        events = Session(esa.open(lake)).df(
            """SELECT stream_id, version, event_type, occurred_at, recorded_at,
                      metadata->>'$.source_event_id' AS record, metadata->>'$.actor' AS actor,
                      metadata->>'$.correlation_id' AS correlation_id,
                      metadata->>'$.source_recorded_at' AS source_recorded_at
               FROM events ORDER BY global_position"""
        )
        assert len(events) == len(topic)
        both = topic.merge(events, on="record", validate="one_to_one")
        assert len(both) == len(topic)
        assert (both.key == both.stream_id).all()
        assert (both.type == both.event_type).all()
        assert (both.headers.map(lambda h: h["actor"]) == both.actor).all()
        assert (both.headers.map(lambda h: h["correlation_id"]) == both.correlation_id).all()
        assert (pd.to_datetime(both.occurred_at_x) == both.occurred_at_y).all()
        # a key's versions follow its partition's offsets
        ranked = both.sort_values(["key", "offset"]).groupby("key").version.diff().dropna()
        assert (ranked == 1).all()

        # the one record whose timestamp goes back in its partition: its recorded time raised
        # to the newest before it there, its own kept
        topic["running"] = topic.groupby("partition").timestamp.cummax()
        late = topic[topic.timestamp < topic.running]
        assert len(late) == 1
        late_row = both[both.record == late.record.iloc[0]].iloc[0]
        running = datetime.fromtimestamp(late.running.iloc[0] / 1000, UTC)
        assert late_row.recorded_at.to_pydatetime() == running
        assert events.source_recorded_at.notna().sum() == 1
        assert late.record.iloc[0] in shown

        # the as-of answers, from the plain consumer's reading
        key = late.key.iloc[0]
        topic["status"] = topic.type.str.removeprefix("Order")
        stamps = pd.to_datetime(topic.running, unit="ms", utc=True)
        then = _status(topic[stamps <= CUT])[key]
        happened = pd.to_datetime(topic.occurred_at)
        known = _status(topic[happened <= CUT].sort_values("occurred_at"))[key]
        now = _status(topic)[key]
        assert (then, known, now) == ("Delivered", "Returned", "Refunded")
        assert (
            f"{key}: {then} as of 2025-03-20T12:00:00Z; {known} at that time as known now; "
            f"{now} now" in printed
        )

        # the audit trail of that key names each of its Kafka records, in order
        trail = re.findall(r"orders/\d+@\d+", shown.split("version")[-1])
        assert trail == topic[topic.key == key].record.tolist()

        # the re-run wrote nothing
        assert "nothing new in the source since the last run" in shown
        charts = [o["data"] for o in outputs if "image/png" in o.get("data", {})]
        assert len(charts) == 2
        for chart in charts:
            assert sorted(chart) == ["application/vnd.vega.v5+json", "image/png", "text/plain"]
            assert not [d for d in chart["application/vnd.vega.v5+json"]["data"] if "url" in d]
    finally:
        shutil.rmtree(lake.parent, ignore_errors=True)  # the notebook's scratch folder
