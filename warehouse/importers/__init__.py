"""Importers of real ERC datasets into the warehouse tables as an external source with its own label set.

``import_dailydialog(home, path)`` and ``import_meld(home, path)`` read the public file formats, report every bad
row with its file and line (never skipped silently), and upsert ``Dialogue`` (``source`` = the dataset name,
``source_split`` = the dataset's own split, ``status='accepted'``, ``decided_by='import'``) and ``Turn`` records
(``label`` = the dataset's own label name, ``label_source='import'``). Label sets and their mappings onto emoforge's
named mappings (``erc7``) live in :mod:`warehouse.importers.labels`.
"""

from warehouse.importers.common import BadRow, ImportFailed, ImportReport
from warehouse.importers.dailydialog import import_dailydialog, read_dailydialog
from warehouse.importers.labels import LABEL_SETS, LabelSet, external_label
from warehouse.importers.meld import import_meld, read_meld

__all__ = [
    "BadRow", "ImportFailed", "ImportReport", "LABEL_SETS", "LabelSet", "external_label",
    "import_dailydialog", "read_dailydialog", "import_meld", "read_meld",
]
