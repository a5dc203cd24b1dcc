"""shared.state (stand-in): the webui's job and progress state, and the flag the Interrupt button sets.

Attributes the extension reads or writes, as documented for the webui's ``State``: ``interrupted``,
``skipped``, ``job``, ``job_no``, ``job_count``, ``sampling_step``, ``sampling_steps``, ``textinfo``;
``begin(job)`` starts a job with the flags cleared, ``end()`` finishes it, ``interrupt()`` is the button.
"""
import time


class State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.time_start = None
        self.history = []  # stand-in only: (job, textinfo) pairs seen, for the tests

    def begin(self, job="(unknown)"):
        self.interrupted = False
        self.skipped = False
        self.job = job
        self.job_no = 0
        self.job_count = -1
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None
        self.time_start = time.time()

    def end(self):
        self.history.append((self.job, self.textinfo))
        self.job = ""
        self.job_count = 0

    def interrupt(self):
        self.interrupted = True

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name == "textinfo" and value and hasattr(self, "history"):
            self.history.append((self.job, value))
