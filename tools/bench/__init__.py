"""Benchmark queuectl against baselines measured moments before in the same run.

Every figure is a ratio to (or sits next to) something measured in the same run, in
alternating rounds whose median is kept, so the figures hold on a noisy 2-core machine:
drains against a bare thread pool running the same commands (the floor), queuectl next to
task-spooler (``tsp``) at the same N and C, one CLI process against ``python -c pass``, deep
queues against shallow ones, workflow drains against the plain drain. Homes are created under
``--dir`` (default: a fresh folder in $HOME, the filesystem a default ``~/.queuectl`` lives
on). Progress goes to stderr; the report (one table, or JSON with ``--json``) to stdout.

Sections (``--only a,b`` / ``--skip a,b``):

  drains     the classic figures: burst drain of 2000 at C = 4 and 1 vs the floor (journal
             timing), and without fsync (eatmydata)
  tsp        queuectl and task-spooler side by side at N = 900, C = 1 and 4, commands `true`
             and `append`: already-running worker, start-then-drain, first start to last done
  latency    idle latency: from the enqueueing process's start and from its return
  percall    one `queuectl add` / `queuectl enqueue` process vs `python -c pass` and `tsp true`
  enqueue    a durable batch enqueue of 10,000
  depth      100,000 pending: drain of the first 1000 vs a drain of 100, status, list, RSS
  readers    history, show, stats, metrics, fsck, compact, rebuild on a home 100,000 jobs
             went through (built once, cached under a reused --dir)
  workflows  limited queues, a dependency chain, a fan-out, a mass release, vs plain drains

The bench installs task-spooler and eatmydata with apt-get when they are missing and it runs
as root; otherwise it says which figures it could not measure. It never leaves a process
behind (workers get SIGTERM, tsp servers `tsp -K`), also on Ctrl-C.
"""
