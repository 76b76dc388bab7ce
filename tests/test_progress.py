"""svq.progress: progress lines at most every LOG_INTERVAL seconds into a log, as usual on a
terminal."""

import io

from svq.progress import LOG_INTERVAL, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_line_at_most_every_interval_and_a_terminal_the_usual_bar():
    log = io.StringIO()
    bar = progress_bar(total=1000, file=log)
    for step in range(1000):
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}", refresh=False)  # as the training loops do
        bar.update(1)
    bar.close()
    assert bar.mininterval == LOG_INTERVAL == 10.0
    assert log.getvalue().count("\r") <= 3  # the first draw and the last, not 1000
    terminal = progress_bar(total=5, file=Terminal())
    assert terminal.mininterval == 0.1  # tqdm's own default
    terminal.close()
