#!/usr/bin/env python3
"""Do two `sipct conformance --json` reports say the same (sipct.conformance.samereport)?

Usage: .venv/bin/python scripts/same-report.py A.json B.json   (exit 0: the same; 1: the differences, printed)
"""

import sys
from pathlib import Path

from sipct.conformance.samereport import compare_files

if len(sys.argv) != 3:
    sys.exit(__doc__)
found = compare_files(Path(sys.argv[1]), Path(sys.argv[2]))
for line in found[:50]:
    print(line)
print(f"{len(found)} differences" if found else "the same report (timing, timeouts, drop reasons and paths aside)")
sys.exit(1 if found else 0)
