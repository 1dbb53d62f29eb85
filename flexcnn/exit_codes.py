"""The exit statuses of ``flexcnn`` commands, for schedulers and scripts that act on them.

* 0 - done: the run, the study or the agents' work is finished.
* 1 - failed: a worker gave up after ``--max-failures`` failed trials, an agent
  crashed more than ``--max-restarts`` times, the database stayed away.
* 2 - a usage error: bad config, sweep, storage URL or option (one line, no traceback).
* 75 - stopped by a signal (SIGTERM, Ctrl-C) before the work was finished: an
  Optuna worker whose study still needs trials recorded and re-queued its
  trial and left; ``flexcnn agent`` passes this on. Start it again to go on.
  (75 is EX_TEMPFAIL of BSD's sysexits.h: "try again later".) Kubernetes'
  ``podFailurePolicy`` (agents/k8s) then recreates an evicted or preempted pod
  instead of counting its index as done, which it would on 0.
* 130 - interrupted: Ctrl-C or a second signal, ``flexcnn optuna run`` asked
  to stop (it re-queues its workers' trials), ``flexcnn agent`` had to kill its agents.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # flexcnn.errors.UserError.exit_code
EXIT_STOPPED = 75
EXIT_INTERRUPTED = 130

# Endings a scheduler should answer by starting the command again: a signal stopped it with work left.
# The Kubernetes Job (agents/k8s) ignores these, like evictions; 1 and 2 count against its retries.
START_AGAIN = (EXIT_STOPPED, EXIT_INTERRUPTED)
