"""Benchmark queuectl against baselines measured moments before in the same run.

Every figure is a ratio to (or sits next to) something measured in the same run, in
alternating rounds whose median is kept, so the figures hold on a noisy 2-core machine:
drains against a bare thread pool running the same commands (the floor), queuectl next to
task-spooler (``tsp``) at the same N and C, one CLI process against ``python -c pass``, deep
queues against shallow ones, workflow drains against the plain drain. Homes are created under
``--dir`` (default: a fresh folder in $HOME, the filesystem a default ``~/.queuectl`` lives
on). Progress goes to stderr; the report (a side-by-side table with task-spooler, then every
figure; or JSON with ``--json``) to stdout. ``--quick`` runs everything small (about a
minute), ``--tiny`` smaller still (the smoke test). queuectl runs with bytecode: the bench
unsets ``PYTHONDONTWRITEBYTECODE`` for its children and runs ``compileall`` first.

Sections (``--only a,b`` / ``--skip a,b``):

  drains     the classic figures: burst drain of 2000 at C = 4, 1 and 16 vs the floor (journal
             timing), by 4 and 16 one-thread worker processes, and without fsync (eatmydata)
  tsp        queuectl and task-spooler side by side at N = 900, C = 1 and 4 (commands `true`
             and `append`) and 16 (`true`): already-running worker, start-then-drain, first
             start to last done
  latency    idle latency: from the enqueueing process's start and from its return
  percall    one `queuectl add` / `enqueue` / `status` process vs `python -c pass` and
             `tsp true`, with bytecode and without
  enqueue    a durable batch enqueue of 10,000
  depth      100,000 pending: drain of the first 1000 vs a drain of 100, status, list, RSS
  readers    history, show, stats, metrics, fsck, compact, rebuild on a home 100,000 jobs
             went through (built once, cached under a reused --dir)
  workflows  limited queues, a dependency chain, a fan-out, a mass release, vs plain drains

The bench installs task-spooler and eatmydata with apt-get when they are missing and it runs
as root; otherwise it says which figures it could not measure. It never leaves a process
behind (workers get SIGTERM, tsp servers `tsp -K`), also on Ctrl-C.
"""
