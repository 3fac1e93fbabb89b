"""Each warning once per run: `warn_once(message)` for our own, `show_once(logger, text)` for a library's.

A run's process builds towers and engines more than once (the text tower, the contrastive towers,
the G and D engines), and each used to print the same warning again; the real ones then drown in
repeats. Our own warnings go through `warn_once`: a UserWarning subclass under a "once" filter, so
Python prints each distinct message once per process (pytest.warns still sees every call: it
records with all filters off), and every call is remembered, so that a run records in run.json the
warnings given since it started (`warning_mark`, `warnings_since`), shown or not. A library's
repeated log line is cut down by `show_once`, a logging filter that lets the first record with the
given text through and drops the later ones.
"""

import logging
import warnings


class RunWarning(UserWarning):
    """A warning about the run (e.g. random tower weights) that the log shows once."""


warnings.filterwarnings("once", category=RunWarning)
_given: list = []  # every message given to warn_once in this process, in order


def warn_once(message: str, stacklevel: int = 2) -> None:
    """Warn (RunWarning, a UserWarning) once per process per distinct message; remember every call."""
    _given.append(message)
    warnings.warn(message, RunWarning, stacklevel=stacklevel + 1)


def warning_mark() -> int:
    """A mark to pass to warnings_since later (e.g. taken when a run starts)."""
    return len(_given)


def warnings_since(mark: int) -> list:
    """The distinct messages given to warn_once since the mark, oldest first."""
    return list(dict.fromkeys(_given[mark:]))


class _FirstOnly(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        if self.seen:
            return False
        self.seen = True
        return True


def show_once(logger: logging.Logger, text: str) -> None:
    """Let only the first of logger's records that contain `text` through (idempotent per logger and text)."""
    if not any(isinstance(f, _FirstOnly) and f.text == text for f in logger.filters):
        logger.addFilter(_FirstOnly(text))


def drop_always(logger: logging.Logger, text: str):
    """A context manager that drops logger's records containing `text` inside the block (a library's
    line that our own warning already says, louder). On the root logger it also keeps the library's
    module-level logging.info/warning calls from configuring the root logger (see _Dropped)."""
    return _Dropped(logger, text)


class _Dropped:
    def __init__(self, logger, text):
        self.logger, self.filter = logger, _FirstOnly(text)
        self.filter.seen = True  # every record with the text is a repeat of ours

    def __enter__(self):
        self.logger.addFilter(self.filter)
        # logging.warning(...) (how open_clip logs) first calls basicConfig when the root logger has no
        # handler, which would make every later record of every logger (submitit's INFO lines) print a
        # second time on stderr; a handler for the block keeps the root logger as it was.
        self.guard = logging.NullHandler() if self.logger is logging.getLogger() and not self.logger.handlers else None
        if self.guard:
            self.logger.addHandler(self.guard)

    def __exit__(self, *exc):
        self.logger.removeFilter(self.filter)
        if self.guard:
            self.logger.removeHandler(self.guard)
