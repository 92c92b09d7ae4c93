"""The page: one document for every view; the script draws the view its address names."""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="csrf" content="__CSRF__">
<meta name="queuectl-mode" content="__MODE__">
<title>queuectl</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/app.css">
<script type="module" src="/assets/app.js"></script>
</head>
<body>
<a class="skip" href="#main">Skip to the content</a>
<header class="top">
  <a class="brand" href="/">queuectl</a>
  <nav aria-label="Views">
    <a href="/" data-nav="overview">Overview</a>
    <a href="/jobs" data-nav="jobs">Jobs</a>
    <a href="/queues" data-nav="queues">Queues</a>
    <a href="/workers" data-nav="workers">Workers</a>
    <a href="/schedules" data-nav="schedules">Schedules</a>
  </nav>
  <span id="read-only" class="chip read-only-tag" title="started with --read-only: no button changes anything">read-only</span>
  <span id="live" class="live" title="not refreshed yet">connecting</span>
</header>
<main id="main" tabindex="-1"><p class="muted">Loading…</p></main>
<div id="toasts" class="toasts" role="status" aria-live="polite"></div>
<noscript><p>This page needs JavaScript. The same data is in the JSON API under /api/ and in
the command line (queuectl status, list, show).</p></noscript>
</body>
</html>
"""
