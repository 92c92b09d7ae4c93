"""The stylesheet: light and dark themes (following the system), phone to desk."""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""/* queuectl dashboard: one stylesheet, light and dark (following the system), phone to desk. */

:root {
  color-scheme: light dark;
  --bg: #f5f6f8;
  --panel: #ffffff;
  --subtle: #f0f2f5;
  --fg: #1a1e24;
  --muted: #5b6470;
  --border: #dde1e7;
  --accent: #2c5bd0;
  --accent-fg: #ffffff;
  --code-bg: #f3f4f7;
  --shadow: 0 1px 2px rgb(16 24 40 / 6%);
  --pending: #2f6bd6;
  --processing: #7a3ae0;
  --completed: #1c7c39;
  --failed: #b05a00;
  --dead: #c42b2b;
  --cancelled: #687080;
  --blocked: #0d7490;
  --held: #8a6a00;
  --radius: 10px;
  --mono: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas, monospace;
}

@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f1217;
    --panel: #171b22;
    --subtle: #1e232b;
    --fg: #e5e8ed;
    --muted: #9aa3af;
    --border: #2b313b;
    --accent: #7ea4ff;
    --accent-fg: #0f1217;
    --code-bg: #0b0e12;
    --shadow: none;
    --pending: #72a7ff;
    --processing: #b996f7;
    --completed: #55c277;
    --failed: #f0a14e;
    --dead: #ff6f6f;
    --cancelled: #a0a7b3;
    --blocked: #3cc0e8;
    --held: #e2c24f;
  }
}

* { box-sizing: border-box; }

html { background: var(--bg); }

body {
  margin: 0;
  color: var(--fg);
  background: var(--bg);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
  -webkit-text-size-adjust: 100%;
}

a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }

:focus-visible { outline: 2px solid var(--accent); outline-offset: 2px; border-radius: 4px; }

h1 { font-size: 1.45rem; font-weight: 650; margin: 0; overflow-wrap: anywhere; }
h2 { font-size: 1rem; font-weight: 620; margin: 0 0 10px; }
h3 { font-size: .86rem; font-weight: 620; margin: 14px 0 6px; color: var(--muted); }
p { margin: 0 0 8px; }
code { font-family: var(--mono); font-size: .92em; background: var(--subtle); padding: 1px 5px;
  border-radius: 5px; }

.mono { font-family: var(--mono); font-size: .93em; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.small { font-size: .84rem; }
.strong { font-weight: 600; }
.nowrap { white-space: nowrap; overflow-wrap: normal; }
h1.mono { font-size: 1.3rem; }
.num { text-align: right; font-variant-numeric: tabular-nums; }
[hidden] { display: none !important; }

.skip { position: absolute; left: -999px; top: 8px; background: var(--panel); padding: 8px 12px;
  z-index: 10; border-radius: 6px; }
.skip:focus { left: 8px; }

/* ------------------------------------------------------------------ frame */

.top {
  position: sticky;
  top: 0;
  z-index: 5;
  display: flex;
  align-items: center;
  gap: 18px;
  padding: 10px 24px;
  background: var(--panel);
  border-bottom: 1px solid var(--border);
}
.brand { font-weight: 700; font-size: 1.05rem; color: var(--fg); letter-spacing: .01em; }
.brand::before { content: ""; display: inline-block; width: 10px; height: 10px; margin-right: 8px;
  border-radius: 3px; background: var(--accent); vertical-align: 0; }
.top nav { display: flex; gap: 4px; flex: 1; min-width: 0; }
.top nav a { color: var(--muted); padding: 6px 10px; border-radius: 7px; font-weight: 550;
  white-space: nowrap; }
.top nav a:hover { color: var(--fg); background: var(--subtle); text-decoration: none; }
.top nav a[aria-current="page"] { color: var(--fg); background: var(--subtle); }
.read-only-tag { margin-left: auto; font-weight: 600; }
.read-only-tag + .live { margin-left: 0; }
.live { font-size: .8rem; color: var(--muted); white-space: nowrap; }
.live::before { content: ""; display: inline-block; width: 8px; height: 8px; border-radius: 50%;
  margin-right: 6px; background: var(--cancelled); }
.live.ok::before { background: var(--completed); }
.live.down { color: var(--dead); }
.live.down::before { background: var(--dead); }

main { max-width: 1240px; margin: 0 auto; padding: 20px 24px 48px; outline: none; }
.heading { display: flex; align-items: baseline; gap: 12px; flex-wrap: wrap; margin-bottom: 14px; }
.stack { display: flex; flex-direction: column; gap: 16px; }
.stack + .stack, .stack + section, section + .stack { margin-top: 16px; }

.card { background: var(--panel); border: 1px solid var(--border); border-radius: var(--radius);
  padding: 16px 18px; box-shadow: var(--shadow); min-width: 0; }
.card-head { display: flex; align-items: center; justify-content: space-between; gap: 12px;
  flex-wrap: wrap; margin-bottom: 6px; }
.card-head h2 { margin: 0; }
.pair { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
.more { margin: 10px 0 0; font-size: .86rem; }
.headline { font-weight: 550; margin: 4px 0 8px; font-variant-numeric: tabular-nums; }
.empty { padding: 18px 4px; color: var(--muted); }
.empty p:first-child { color: var(--fg); font-weight: 550; }
.notice, .problem { padding: 12px 14px; border-radius: 8px; background: var(--subtle); }
.problem { color: var(--dead); }
.problem:empty { display: none; }
.problem-text, .error-text { color: var(--dead); }
.callout { padding: 10px 12px; border-radius: 8px; border-left: 3px solid var(--dead);
  background: color-mix(in srgb, var(--dead) 8%, transparent); overflow-wrap: anywhere; }
.plain { list-style: none; padding: 0; margin: 0; display: grid; gap: 4px; }

/* ------------------------------------------------------------------ states */

.state-pending { --c: var(--pending); }
.state-processing { --c: var(--processing); }
.state-completed { --c: var(--completed); }
.state-failed { --c: var(--failed); }
.state-dead { --c: var(--dead); }
.state-cancelled { --c: var(--cancelled); }
.state-blocked { --c: var(--blocked); }
.state-held { --c: var(--held); }
.state-unknown { --c: var(--muted); }

.badge { display: inline-block; padding: 1px 9px; border-radius: 999px; font-size: .78rem;
  font-weight: 650; line-height: 1.6; white-space: nowrap; color: var(--c, var(--muted));
  background: color-mix(in srgb, var(--c, var(--muted)) 14%, transparent); }
.badge.large { font-size: .86rem; padding: 2px 11px; }
.badge.paused { --c: var(--failed); }
.badge.active { --c: var(--completed); }
.chip { display: inline-block; padding: 0 8px; border-radius: 6px; font-size: .78rem;
  border: 1px solid var(--border); color: var(--muted); line-height: 1.6; white-space: nowrap; }
.chips { display: inline-flex; flex-wrap: wrap; gap: 4px; margin-top: 3px; }

.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(128px, 1fr)); gap: 10px; }
.tile { display: flex; flex-direction: column; gap: 2px; padding: 12px 14px; border-radius: 9px;
  background: var(--panel); border: 1px solid var(--border); border-left: 4px solid var(--c);
  color: var(--fg); box-shadow: var(--shadow); }
.tile:hover { text-decoration: none; border-color: var(--c); }
.tile-count { font-size: 1.55rem; font-weight: 650; font-variant-numeric: tabular-nums; }
.tile-label { color: var(--muted); font-size: .84rem; }

/* ------------------------------------------------------------------ controls */

.button { display: inline-flex; align-items: center; gap: 6px; padding: 6px 12px; border-radius: 7px;
  border: 1px solid var(--border); background: var(--panel); color: var(--fg); font: inherit;
  font-weight: 550; cursor: pointer; white-space: nowrap; }
.button:hover { background: var(--subtle); text-decoration: none; }
.button.primary { background: var(--accent); border-color: var(--accent); color: var(--accent-fg); }
.button.danger { color: var(--dead); border-color: color-mix(in srgb, var(--dead) 45%, var(--border)); }
.button.small { padding: 2px 9px; font-size: .82rem; }
.button.active { border-color: var(--accent); color: var(--accent); }
.button.quiet { border-color: transparent; color: var(--accent); }
.button.disabled { opacity: .45; cursor: default; }
.toolbar, .row-actions { display: flex; flex-wrap: wrap; gap: 8px; }
.toolbar { margin: 12px 0 4px; }

input, select { font: inherit; color: var(--fg); background: var(--panel);
  border: 1px solid var(--border); border-radius: 7px; padding: 6px 9px; min-width: 0; }
input:focus-visible, select:focus-visible { outline: 2px solid var(--accent); outline-offset: 0; }

.filters { display: flex; flex-wrap: wrap; align-items: flex-end; gap: 10px; margin-bottom: 14px; }
.search-field { flex: 1 1 260px; display: flex; }
.search-field input { width: 100%; padding: 7px 11px; }
.select-field { display: flex; flex-direction: column; gap: 2px; font-size: .76rem;
  color: var(--muted); font-weight: 600; }
.select-field select { font-size: .9rem; font-weight: 400; }

.segmented { display: inline-flex; border: 1px solid var(--border); border-radius: 8px;
  overflow: hidden; }
.segmented a { padding: 4px 11px; color: var(--muted); font-size: .85rem; font-weight: 550; }
.segmented a + a { border-left: 1px solid var(--border); }
.segmented a:hover { background: var(--subtle); text-decoration: none; }
.segmented a[aria-current="true"] { background: var(--accent); color: var(--accent-fg); }

.tabs { display: inline-flex; gap: 4px; }
.tab { font: inherit; background: none; border: 1px solid transparent; border-radius: 7px;
  padding: 4px 10px; color: var(--muted); cursor: pointer; font-weight: 550; }
.tab[aria-selected="true"] { color: var(--fg); border-color: var(--border); background: var(--subtle); }

/* ------------------------------------------------------------------ tables */

.rows { width: 100%; border-collapse: collapse; }
.rows th { text-align: left; color: var(--muted); font-size: .74rem; font-weight: 650;
  text-transform: uppercase; letter-spacing: .04em; padding: 6px 10px;
  border-bottom: 1px solid var(--border); white-space: nowrap; }
.rows td { padding: 9px 10px; border-bottom: 1px solid var(--border); vertical-align: top; }
.rows tbody tr:last-child td { border-bottom: none; }
.rows tbody tr:hover { background: var(--subtle); }
.rows.compact td { padding: 6px 10px; }
.rows tr.older { opacity: .6; }
.jobs-table { background: var(--panel); border: 1px solid var(--border); border-radius: var(--radius);
  border-collapse: separate; border-spacing: 0; overflow: hidden; box-shadow: var(--shadow); }
.job-cell { max-width: 420px; }
.command-line { color: var(--muted); font-size: .82rem; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; max-width: 56ch; margin-top: 2px; }
.error-cell { max-width: 30ch; }
.error-cell .error-text { display: block; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }

.pager { display: flex; align-items: center; justify-content: space-between; gap: 10px;
  flex-wrap: wrap; margin-top: 12px; }
.pager-buttons { display: flex; align-items: center; gap: 6px; flex-wrap: wrap; }
.pager-text { color: var(--muted); font-variant-numeric: tabular-nums; }

/* ------------------------------------------------------------------ the job page */

.crumbs { color: var(--muted); font-size: .86rem; margin-bottom: 6px; overflow-wrap: anywhere; }
.job-title { display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
.status-line { margin: 6px 0 0; }
.job-top { margin-bottom: 16px; }
.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr));
  gap: 10px 18px; margin: 0; }
.fact { min-width: 0; }
.fact dt { color: var(--muted); font-size: .76rem; font-weight: 650; text-transform: uppercase;
  letter-spacing: .04em; }
.fact dd { margin: 2px 0 0; overflow-wrap: anywhere; }
.links { list-style: none; margin: 0; padding: 0; display: grid; gap: 4px; }
pre { margin: 0; }
.command, .log { font-family: var(--mono); font-size: 12.5px; line-height: 1.5;
  background: var(--code-bg); border: 1px solid var(--border); border-radius: 8px;
  padding: 10px 12px; white-space: pre-wrap; overflow-wrap: anywhere; overflow: auto; }
.log { max-height: 60vh; min-height: 3em; }
.output-controls { display: flex; align-items: center; justify-content: space-between; gap: 10px;
  flex-wrap: wrap; margin-bottom: 8px; }
.output-title { font-weight: 620; }
.live-tag { margin-left: 8px; font-size: .74rem; font-weight: 700; color: var(--completed);
  text-transform: uppercase; letter-spacing: .05em; }
.live-tag::before { content: "● "; }

/* ------------------------------------------------------------------ charts */

.chart-box { width: 100%; min-height: 190px; }
.chart { display: block; max-width: 100%; }
.chart .grid { stroke: var(--border); stroke-width: 1; }
.chart .tick { fill: var(--muted); font-size: 11px; font-family: system-ui, sans-serif; }
.chart .chart-empty { fill: var(--muted); font-size: 13px; }
.chart .hover { fill: transparent; }
.chart g:hover .hover { fill: color-mix(in srgb, var(--fg) 6%, transparent); }
.bar-completed { fill: var(--completed); background: var(--completed); }
.bar-failed { fill: var(--failed); background: var(--failed); }
.bar-dead { fill: var(--dead); background: var(--dead); }
.bar-cancelled { fill: var(--cancelled); background: var(--cancelled); }
.line { fill: none; stroke-width: 2; stroke-linejoin: round; stroke-linecap: round; }
.line-p50 { stroke: var(--accent); background: var(--accent); }
.line-p95 { stroke: var(--processing); background: var(--processing); stroke-dasharray: 5 3; }
.dot-p50 { fill: var(--accent); }
.dot-p95 { fill: var(--processing); }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 4px 14px; padding: 0;
  margin: 0 0 6px; color: var(--muted); font-size: .82rem; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px;
  vertical-align: -1px; }
.swatch.line-p50, .swatch.line-p95 { height: 3px; width: 14px; vertical-align: 3px; }

/* ------------------------------------------------------------------ dialog and toasts */

.dialog { border: 1px solid var(--border); border-radius: 12px; padding: 20px 22px;
  width: min(460px, calc(100vw - 24px)); background: var(--panel); color: var(--fg);
  box-shadow: 0 12px 40px rgb(0 0 0 / 25%); }
.dialog::backdrop { background: rgb(10 12 16 / 50%); }
.dialog h2 { font-size: 1.1rem; overflow-wrap: anywhere; }
.dialog-message { color: var(--muted); }
.dialog-buttons { display: flex; justify-content: flex-end; gap: 8px; margin-top: 16px; }
.field { display: flex; flex-direction: column; gap: 4px; font-weight: 550; margin-top: 10px; }
.toasts { position: fixed; right: 16px; bottom: 16px; display: flex; flex-direction: column;
  gap: 8px; z-index: 20; max-width: min(420px, calc(100vw - 32px)); }
.toast { padding: 10px 14px; border-radius: 8px; background: var(--fg); color: var(--bg);
  box-shadow: 0 6px 20px rgb(0 0 0 / 20%); overflow-wrap: anywhere; }
.toast.error { background: var(--dead); color: #ffffff; }

/* ------------------------------------------------------------------ narrow screens */

@media (max-width: 900px) {
  .pair { grid-template-columns: minmax(0, 1fr); }
}

@media (max-width: 720px) {
  .top { flex-wrap: wrap; gap: 6px 12px; padding: 8px 12px; }
  .top nav { order: 3; flex-basis: 100%; flex-wrap: wrap; gap: 0; margin: 0 -6px; }
  .top nav a { padding: 5px 6px; font-size: .9rem; }
  .rows td.is-empty { display: none; }
  .live { margin-left: auto; }
  main { padding: 14px 12px 40px; }
  .card { padding: 12px; }
  .tiles { grid-template-columns: repeat(2, minmax(0, 1fr)); }
  .filters { gap: 8px; }
  .search-field { flex-basis: 100%; }
  .select-field { flex: 1 1 40%; }
  .select-field select { width: 100%; }
  .rows thead { display: none; }
  .rows, .rows tbody, .rows tr, .rows td { display: block; width: 100%; }
  .rows tr { padding: 10px 12px; border-bottom: 1px solid var(--border); }
  .rows tbody tr:last-child { border-bottom: none; }
  .rows td { display: flex; justify-content: space-between; gap: 12px; padding: 2px 0;
    border: none; text-align: right; min-width: 0; }
  .rows td::before { content: attr(data-label); color: var(--muted); font-size: .78rem;
    font-weight: 600; text-align: left; flex: none; }
  .rows td:not([data-label])::before { content: none; }
  .rows td.job-cell { display: block; text-align: left; max-width: none; padding-bottom: 4px; }
  .rows td.job-cell::before { content: none; }
  .job-cell .command-line { max-width: 100%; }
  .error-cell { max-width: none; }
  .error-cell .error-text { max-width: 60vw; }
  .pager { justify-content: center; }
  .facts { grid-template-columns: repeat(2, minmax(0, 1fr)); }
}
"""
