"""Log lines and progress bars share stderr without overwriting each other."""

from __future__ import annotations

import re
import sys

from tqdm import tqdm

from featmux.cli.common import say


def test_log_lines_clear_the_progress_bar_first(capsys):
    bar = tqdm(total=10, file=sys.stderr, mininterval=0, ncols=60)
    bar.update(3)
    say("step 3: valid AUC 0.7 [best]")
    bar.close()
    err = capsys.readouterr().err
    # the bar's line is blanked and the cursor back at column 0 before the log line (not appended to it)
    assert re.search(r"\r *step 3: valid AUC 0\.7 \[best\]\n", err), repr(err)
