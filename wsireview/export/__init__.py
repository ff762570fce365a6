"""Export of labeled patch sets: one module per format.

``selection`` decides which patches and labels (consensus of reviewers), ``plan`` places them at
the output resolution with safe names, a format module writes them (``imagefolder``, ``qupath``,
``clam_h5``, ``manifest`` for csv), and ``atomic`` makes the result appear all at once.
"""

from wsireview.export.atomic import ExportError
from wsireview.export.runner import FORMATS, ExportOptions, ExportReport, run_export
from wsireview.export.selection import CONSENSUS_MODES, DROP_ORDER, Selection

__all__ = ["CONSENSUS_MODES", "DROP_ORDER", "FORMATS", "ExportError", "ExportOptions", "ExportReport",
           "Selection", "run_export"]
