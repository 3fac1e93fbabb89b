"""Errors that the command-line entry points turn into exit codes.

UsageError: the user asked for something that cannot work (bad path, malformed
annotation file, invalid option). Commands exit with code 2 and print the
message, which must say what is wrong and what to do about it. Nothing has been
written when it is raised.
"""


class UsageError(Exception):
    """Bad invocation or input; the CLI exits with code 2."""

    exit_code = 2
