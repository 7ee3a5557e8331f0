"""Import: bring event logs users already hold into a lake (DESIGN.md §5, the sources layer).

:func:`import_events` is the one entry point; sources are small classes behind
:class:`~esanalytics.sources.base.Source`, so a new system is one file.
"""

from esanalytics.sources.base import RawBatch, Source
from esanalytics.sources.files import CsvSource, JsonLinesSource, ParquetSource, open_file_source
from esanalytics.sources.importer import ImportSummary, import_events
from esanalytics.sources.mapping import ImportMapping, TimeField
from esanalytics.sources.registry import open_source

__all__ = [
    "CsvSource",
    "ImportMapping",
    "ImportSummary",
    "JsonLinesSource",
    "ParquetSource",
    "RawBatch",
    "Source",
    "TimeField",
    "import_events",
    "open_file_source",
    "open_source",
]
