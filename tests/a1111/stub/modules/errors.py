"""errors.report (stand-in): what the webui does with an exception it catches -- print it and go on.

``reported`` keeps (message, exception) pairs so tests can see that the host swallowed something.
"""
import sys
import traceback

reported = []


def report(message, *, exc_info=False):
    exc = sys.exc_info()[1] if exc_info else None
    reported.append((message, exc))
    print(f"*** {message}", file=sys.stderr)
    if exc is not None:
        traceback.print_exc(file=sys.stderr)


def display(e, task):
    reported.append((f"{task}: {e}", e))
    print(f"{task}: {type(e).__name__}: {e}", file=sys.stderr)
