"""``overview.js``: The overview (/ and /?range=6h): jobs per state, throughput and latency charts, the"""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// The overview (/ and /?range=6h): jobs per state, throughput and latency charts, the
// queues and the live workers.

import {legend, percentileLines, stackedBars} from './charts.js';
import {code, duration, el, empty, getJSON, num, plural, replaceKeepingFocus, section, STATES,
  when} from './core.js';
import {heading, poller} from './kit.js';

const RANGES = [['1h', 'Hour'], ['6h', '6 hours'], ['24h', '24 hours'], ['7d', '7 days']];
const GROUPS = ['completed', 'failed', 'dead', 'cancelled'];
const GROUP_WORDS = {completed: 'completed', failed: 'failed (will retry)', dead: 'dead',
  cancelled: 'cancelled'};

function rangeOf(url) {
  const asked = url.searchParams.get('range');
  return RANGES.some(([name]) => name === asked) ? asked : '1h';
}

function tiles(counts) {
  return el('nav', {class: 'tiles', 'aria-label': 'Jobs by state'}, STATES.map((state) =>
    el('a', {href: '/jobs?state=' + state, class: 'tile state-' + state, id: 'count-' + state,
      'data-key': 'tile-' + state},
    el('span', {class: 'tile-count', text: num(counts[state])}),
    el('span', {class: 'tile-label', text: state === 'processing' ? 'running' : state}))));
}

function rangePicker(range) {
  return el('nav', {class: 'segmented', 'aria-label': 'Chart range'}, RANGES.map(([name, text]) =>
    el('a', {href: name === '1h' ? '/' : '/?range=' + name, id: 'range-' + name,
      'data-key': 'range-' + name, 'aria-current': name === range ? 'true' : null, text})));
}

function headline(totals) {
  const parts = [plural(totals.finished, 'attempt') + ' finished',
    num(totals.per_minute) + ' per minute'];
  if (totals.wait.p95 !== null) parts.push('wait p95 ' + duration(totals.wait.p95));
  if (totals.run.p95 !== null) parts.push('run p95 ' + duration(totals.run.p95));
  return el('p', {class: 'headline', id: 'chart-totals', text: parts.join(' · ')});
}

function queuesCard(queues) {
  const rows = queues.map((q) => el('tr', {},
    el('td', {'data-label': 'Queue'}, el('a', {href: '/jobs?queue=' + encodeURIComponent(q.name),
      class: 'mono', 'data-key': 'queue-' + q.name, text: q.name})),
    el('td', {'data-label': 'State'}, q.paused ? el('span', {class: 'badge paused', text: 'paused'})
      : el('span', {class: 'muted', text: 'active'})),
    el('td', {'data-label': 'Limit', class: 'num'}, q.parallel ? num(q.parallel) : 'none'),
    el('td', {'data-label': 'Running', class: 'num'}, num(q.running)),
    el('td', {'data-label': 'Waiting', class: 'num'}, num(q.waiting))));
  return section('Queues', el('table', {class: 'rows compact'},
    el('thead', {}, el('tr', {}, ['Queue', 'State', 'Limit', 'Running', 'Waiting'].map((h) =>
      el('th', {scope: 'col', class: h === 'Queue' || h === 'State' ? null : 'num', text: h})))),
    el('tbody', {}, rows)), el('p', {class: 'more'}, el('a', {href: '/queues',
    text: 'Pause, resume or limit queues'})));
}

function workersCard(workers) {
  if (!workers.length) {
    return section('Workers', empty('No worker is running for this home, so nothing starts.',
      el('p', {}, 'Start one with ', code('queuectl worker start'), '.')));
  }
  const threads = workers.reduce((sum, w) => sum + (w.threads || 0), 0);
  const busy = workers.reduce((sum, w) => sum + w.jobs.length, 0);
  return section('Workers', el('p', {class: 'headline', id: 'workers-summary',
    text: plural(workers.length, 'worker') + ' · ' + plural(threads, 'thread') + ' · ' +
      num(busy) + ' running now'}),
  el('ul', {class: 'plain'}, workers.map((w) => el('li', {},
    el('span', {class: 'mono', text: w.id}), ' ',
    el('span', {class: 'muted', text: 'pid ' + w.pid + ', ' + plural(w.threads, 'thread') +
      ', started '}), when(w.started_at)))),
  el('p', {class: 'more'}, el('a', {href: '/workers', text: 'What each worker runs'})));
}

export function overview(main, url) {
  let range = rangeOf(url);
  let last = null;
  const body = el('div', {class: 'stack', id: 'overview'});
  const charts = {bars: null, wait: null, run: null};

  function drawCharts() {
    if (!last) return;
    for (const [name, box] of Object.entries(charts)) {
      if (!box) continue;
      const width = Math.max(260, Math.floor(box.clientWidth));
      const chart = last.chart;
      const picture = name === 'bars'
        ? stackedBars(chart, GROUPS, width, 'Attempts finished per step, by outcome')
        : percentileLines(chart, name, width, (name === 'wait' ? 'Queue wait' : 'Run time') +
          ' p50 and p95');
      box.replaceChildren(picture);
    }
  }

  function draw(data) {
    last = data;
    charts.bars = el('div', {class: 'chart-box', id: 'chart-finished'});
    charts.wait = el('div', {class: 'chart-box', id: 'chart-wait'});
    charts.run = el('div', {class: 'chart-box', id: 'chart-run'});
    const stepWords = {60: 'minute', 300: '5 minutes', 900: '15 minutes', 3600: 'hour'}[
      data.chart.step_seconds] || duration(data.chart.step_seconds);
    replaceKeepingFocus(body,
      tiles(data.counts),
      el('section', {class: 'card'},
        el('div', {class: 'card-head'}, el('h2', {text: 'Finished attempts'}), rangePicker(range)),
        headline(data.chart.totals),
        legend(GROUPS.map((g) => ['bar-' + g, GROUP_WORDS[g]])),
        charts.bars,
        el('p', {class: 'muted small', text: 'One bar per ' + stepWords + '.'})),
      el('div', {class: 'pair'},
        section('Queue wait', legend([['line-p50', 'p50'], ['line-p95', 'p95']]), charts.wait),
        section('Run time', legend([['line-p50', 'p50'], ['line-p95', 'p95']]), charts.run)),
      el('div', {class: 'pair'}, queuesCard(data.queues), workersCard(data.workers)));
    drawCharts();
  }

  const poll = poller(body, () => getJSON('/api/overview', {range}), draw);
  let resizing = null;
  const onResize = () => {
    clearTimeout(resizing);
    resizing = setTimeout(drawCharts, 150);
  };
  window.addEventListener('resize', onResize);
  main.append(heading('Overview'), body);
  document.title = 'Overview · queuectl';
  return {
    load: () => poll(true),
    refresh: () => poll(false),
    update: (next) => {
      range = rangeOf(next);
      return poll(true);
    },
    destroy: () => window.removeEventListener('resize', onResize),
  };
}
"""
