"""``job.js``: The job page (/jobs/ID, ?run=N&stream=err to pick an output): the command, its fields,"""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// The job page (/jobs/ID, ?run=N&stream=err to pick an output): the command, its fields,
// its dependencies, every attempt from the journal, the output of a run (tailed live while
// it runs) and the actions its state allows, each confirmed first.

import {ApiError, badge, chip, describeError, duration, el, elapsed, empty, getJSON, jobLink,
  num, plural, postJSON, replaceKeepingFocus, section, toast, visible, when} from './core.js';
import {confirmAction} from './dialog.js';
import {poller} from './kit.js';
import {refreshNow} from './router.js';

const TAIL_MS = 1000;
const KEEP_CHARS = 2000000;

export const ACTIONS = {
  cancel: {label: 'Cancel', confirm: 'Cancel job', danger: true,
    title: (id) => 'Cancel job ' + id + '?',
    message: 'It will not run again. A running command is stopped (SIGTERM to its process ' +
      'group, SIGKILL 5 s later).'},
  retry: {label: 'Retry', confirm: 'Retry', title: (id) => 'Retry job ' + id + '?',
    message: 'It leaves the dead letter queue for pending, with its attempts reset to 0.'},
  purge: {label: 'Delete', confirm: 'Delete for good', danger: true,
    title: (id) => 'Delete job ' + id + ' for good?',
    message: 'Its file and its logs are removed; the journal keeps its history.'},
  restart: {label: 'Restart', confirm: 'Run again', title: (id) => 'Run job ' + id + ' again?',
    message: 'Its attempts start over; run numbers and history go on.'},
  hold: {label: 'Hold', confirm: 'Hold', title: (id) => 'Hold job ' + id + '?',
    message: 'It will not start until it is released.'},
  release: {label: 'Release', confirm: 'Release', title: (id) => 'Release job ' + id + '?',
    message: 'It may start as soon as a worker is free (or when its dependencies are done).'},
  priority: {label: 'Priority…', confirm: 'Save priority',
    title: (id) => 'Priority of ' + id,
    message: 'Higher runs first; 0 is the default. Only a waiting job can be changed.'},
};

export async function runAction(id, action, job) {
  const spec = ACTIONS[action];
  const input = action === 'priority'
    ? {label: 'Priority (-100 to 100)', min: -100, max: 100, value: job.priority} : null;
  const answer = await confirmAction({title: spec.title(id), message: spec.message,
    confirm: spec.confirm, danger: spec.danger, input});
  if (!answer) return false;
  try {
    const body = action === 'priority' ? {priority: answer.value} : {};
    const result = await postJSON('/api/jobs/' + encodeURIComponent(id) + '/' + action, body);
    toast(result.message);
    return true;
  } catch (error) {
    toast(describeError(error), 'error');
    return false;
  } finally {
    await refreshNow();
  }
}

function outcomeBadge(outcome) {
  const cls = {completed: 'completed', failed: 'failed', timeout: 'failed', worker_lost: 'failed',
    dead: 'dead', dead_timeout: 'dead', cancelled: 'cancelled'}[outcome] || 'unknown';
  return el('span', {class: 'badge state-' + cls, text: (outcome || 'unknown').replace('_', ' ')});
}

function facts(job, running) {
  const items = [];
  const add = (term, value) => {
    if (value === null || value === undefined || value === '') return;
    items.push(el('div', {class: 'fact'}, el('dt', {text: term}), el('dd', {}, value)));
  };
  add('Attempts', num(job.attempts) + ' of ' + num(job.max_retries + 1) +
    (job.runs !== job.attempts ? ' (' + plural(job.runs, 'run') + ' in all)' : ''));
  add('Priority', String(job.priority));
  add('Queue', el('a', {href: '/jobs?queue=' + encodeURIComponent(job.queue), class: 'mono',
    text: job.queue}));
  if (job.labels.length) add('Labels', el('span', {class: 'chips'}, job.labels.map((l) => chip(l))));
  add('Created', when(job.created_at));
  add('Updated', when(job.updated_at));
  if (running) add('Running for', elapsed(running.started_at));
  if (job.state === 'failed' && job.next_run_at) add('Next attempt', when(job.next_run_at));
  if (job.run_at) add('Not before', when(job.run_at));
  if (job.started_at && !running) add('Last started', when(job.started_at));
  if (job.finished_at) add('Finished', when(job.finished_at));
  if (job.last_exit_code !== null) add('Last exit code', String(job.last_exit_code));
  if (job.timeout) add('Timeout', duration(job.timeout));
  if (job.gpus) add('GPUs', String(job.gpus));
  add('Working folder', job.cwd ? el('span', {class: 'mono', text: job.cwd}) : null);
  add('Unique key', job.unique_key ? el('span', {class: 'mono', text: job.unique_key}) : null);
  add('Schedule', job.schedule ? el('span', {class: 'mono', text: job.schedule}) : null);
  add('Source', job.source);
  return el('dl', {class: 'facts'}, items);
}

function dependencyList(items) {
  return el('ul', {class: 'links'}, items.map((d) => el('li', {},
    jobLink(d.id), ' ', d.state ? badge(d.state) : el('span', {class: 'muted', text: 'deleted'}),
    d.kind === 'after_any' ? el('span', {class: 'muted small', text: ' (any end)'}) : null)));
}

function attemptsTable(attempts, running, generation, output) {
  const rows = [];
  if (running) {
    rows.push(el('tr', {class: 'row-processing'},
      el('td', {'data-label': 'Run', class: 'num'}, String(running.run)),
      el('td', {'data-label': 'Outcome'}, badge('processing')),
      el('td', {'data-label': 'Exit', class: 'num'}, '\u2013'),
      el('td', {'data-label': 'Started'}, when(running.started_at)),
      el('td', {'data-label': 'Took'}, elapsed(running.started_at)),
      el('td', {'data-label': 'Worker', class: 'mono small'},
        running.worker ? running.worker.id : 'starting'),
      el('td', {'data-label': 'Error'}, ''),
      el('td', {}, output.button(running.run))));
  }
  for (const a of [...attempts].reverse()) {
    const older = a.generation !== undefined && a.generation !== generation;
    rows.push(el('tr', {class: older ? 'older' : null},
      el('td', {'data-label': 'Run', class: 'num'}, String(a.run) +
        (older ? ' (life ' + a.life + ')' : '')),
      el('td', {'data-label': 'Outcome'}, outcomeBadge(a.outcome)),
      el('td', {'data-label': 'Exit', class: 'num'},
        a.exit_code === null || a.exit_code === undefined ? '\u2013' : String(a.exit_code)),
      el('td', {'data-label': 'Started'}, a.started_at ? when(a.started_at) : '\u2013'),
      el('td', {'data-label': 'Took'}, a.duration !== null && a.duration !== undefined
        ? duration(a.duration) : '\u2013'),
      el('td', {'data-label': 'Worker', class: 'mono small'}, a.worker || '\u2013'),
      el('td', {'data-label': 'Error', class: 'error-cell'},
        a.error ? el('span', {class: 'error-text', title: a.error, text: a.error}) : ''),
      el('td', {}, older ? '' : output.button(a.run))));
  }
  if (!rows.length) return empty('No attempt yet.');
  return el('table', {class: 'rows', id: 'attempts'},
    el('thead', {}, el('tr', {}, ['Run', 'Outcome', 'Exit', 'Started', 'Took', 'Worker', 'Error',
      ''].map((h) => el('th', {scope: 'col', text: h})))),
    el('tbody', {}, rows));
}

// The output card: one run and one stream at a time, read in chunks from an offset; while
// the run is live it asks again every second from where the last answer ended.
class Output {
  constructor(id, url) {
    this.id = id;
    this.run = Number(url.searchParams.get('run')) || null;
    this.explicit = this.run !== null;
    this.stream = url.searchParams.get('stream') === 'err' ? 'err' : 'out';
    this.runs = [];
    this.card = section('Output');
    this.card.id = 'output';
    this.controls = el('div', {class: 'output-controls'});
    this.view = el('div', {class: 'output-view'});
    this.card.append(this.controls, this.view);
    this.token = 0;
    this.timer = null;
  }

  button(run) {
    const has = this.runs.some((r) => r.run === run);
    if (!has) return el('span', {class: 'muted small', text: 'no output'});
    return el('button', {type: 'button', class: 'button small' + (run === this.run ? ' active' : ''),
      id: 'show-run-' + run, 'data-key': 'show-run-' + run, 'aria-pressed': String(run === this.run),
      text: 'Output', onclick: () => {
        this.explicit = true;
        this.choose(run, this.stream);
      }});
  }

  sync(outputs) {
    this.runs = outputs;
    const known = outputs.some((r) => r.run === this.run);
    const live = outputs.find((r) => r.live);
    if (known && live && live.run !== this.run && !this.explicit) {
      this.choose(live.run, 'out', true);  // a new attempt started: follow it
      return;
    }
    if (!known) {
      const printed = outputs.find((r) => Object.values(r.streams).some((size) => size > 0));
      const pick = live || printed || outputs[0];
      if (pick) {
        const streams = pick.streams;
        const stream = !live && !streams.out && streams.err ? 'err' : this.stream;
        this.choose(pick.run, stream, true);
        return;
      }
      this.run = null;
    }
    this.drawControls();
    this.card.hidden = this.run === null;  // never ran, or no run printed anything
    if (this.run !== null && this.isLive() && !this.timer && this.busy !== this.token && this.token) {
      this.tick(this.token);
    }
  }

  isLive() {
    const found = this.runs.find((r) => r.run === this.run);
    return Boolean(found && found.live);
  }

  drawControls() {
    if (this.run === null) {
      this.controls.replaceChildren();
      return;
    }
    const found = this.runs.find((r) => r.run === this.run) || {streams: {}, live: false};
    const tab = (stream, text) => el('button', {type: 'button', role: 'tab', id: 'stream-' + stream,
      'data-key': 'stream-' + stream, class: 'tab', 'aria-selected': String(stream === this.stream),
      onclick: () => this.choose(this.run, stream)},
    text, found.streams[stream] !== undefined && !found.live
      ? el('span', {class: 'muted small', text: ' ' + size(found.streams[stream])}) : null);
    replaceKeepingFocus(this.controls,
      el('span', {class: 'output-title', id: 'output-title'}, 'Run ' + this.run,
        found.live ? el('span', {class: 'live-tag', text: 'live'}) : null),
      el('div', {class: 'tabs', role: 'tablist', 'aria-label': 'Stream'},
        tab('out', 'stdout'), tab('err', 'stderr')));
  }

  choose(run, stream, quiet) {
    this.run = run;
    this.stream = stream;
    this.card.hidden = false;  // a run that starts after the page was drawn shows at once
    const url = new URL(location.href);
    if (!quiet) {
      url.searchParams.set('run', String(run));
      url.searchParams.set('stream', stream);
      history.replaceState(null, '', url);
    }
    this.drawControls();
    this.start();
    for (const node of document.querySelectorAll('[id^="show-run-"]')) {
      const chosen = node.id === 'show-run-' + run;
      node.classList.toggle('active', chosen);
      node.setAttribute('aria-pressed', String(chosen));
    }
  }

  start() {
    clearTimeout(this.timer);
    this.timer = null;
    this.token += 1;
    this.next = null;
    this.text = '';
    this.pre = null;
    this.wasLive = false;
    this.ending = 0;
    this.starting = 0;
    this.view.replaceChildren(el('p', {class: 'muted', text: 'Loading output…'}));
    this.tick(this.token);
  }

  async tick(token) {
    this.timer = null;
    this.busy = token;
    let part;
    try {
      part = await getJSON('/api/jobs/' + encodeURIComponent(this.id) + '/output',
        {run: this.run, stream: this.stream, offset: this.next === null ? null : this.next});
    } catch (error) {
      if (this.busy === token) this.busy = 0;
      if (token !== this.token) return;
      if (error instanceof ApiError && error.status === 404) {
        this.view.replaceChildren(el('p', {class: 'muted', text: 'This job is gone.'}));
        return;
      }
      this.timer = setTimeout(() => this.tick(token), TAIL_MS * 2);
      return;
    }
    if (this.busy === token) this.busy = 0;
    if (token !== this.token) return;  // another run or stream was chosen meanwhile
    this.show(part);
    const later = (ms) => {
      this.timer = setTimeout(() => this.tick(token), ms);
    };
    if (part.exists && part.next < part.size) {
      later(0);  // more than one chunk: read on
    } else if (part.live) {
      this.wasLive = true;
      later(TAIL_MS);
    } else if (this.wasLive && !part.exists && this.ending < 10) {
      // The run just ended and its worker is moving the file to logs/: read the end there.
      this.ending += 1;
      later(TAIL_MS / 2);
    } else if (!part.exists && part.running && this.isLive() && this.starting < 30) {
      this.starting += 1;  // the run is starting: its output file is not named yet
      later(TAIL_MS);
    }
  }

  show(part) {
    const streamWord = this.stream === 'out' ? 'stdout' : 'stderr';
    if (!part.exists || (part.size === 0 && !this.text)) {
      if (this.pre && this.text) return;  // keep what was shown while the file moves
      const waiting = (part.live || part.running) && this.isLive();
      this.view.replaceChildren(el('p', {class: 'muted', id: 'output-empty',
        text: waiting ? 'Nothing on ' + streamWord + ' yet; it shows here as it is written.'
          : 'Run ' + this.run + ' printed nothing on ' + streamWord + '.'}));
      this.pre = null;
      if (part.exists) this.next = part.next;
      return;
    }
    if (!this.pre || part.reset) {
      this.text = '';
      this.pre = el('pre', {class: 'log', id: 'output-text', tabindex: '0',
        'aria-label': streamWord + ' of run ' + this.run});
      const note = part.offset > 0 ? el('p', {class: 'muted small', id: 'output-cut',
        text: 'Showing the end: the first ' + size(part.offset) + ' are not shown ' +
          '(queuectl logs ' + this.id + ' --run ' + this.run + ' prints everything).'}) : null;
      this.view.replaceChildren(...[note, this.pre].filter(Boolean));
    }
    const pinned = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 24;
    this.text += part.text;
    if (this.text.length > KEEP_CHARS) this.text = this.text.slice(-KEEP_CHARS);
    this.pre.textContent = visible(this.text);
    if (pinned) this.pre.scrollTop = this.pre.scrollHeight;
    this.next = part.next;
  }

  stop() {
    clearTimeout(this.timer);
    this.timer = null;
    this.token += 1;
  }
}

function size(bytes) {
  if (bytes === undefined || bytes === null) return '';
  if (bytes < 1024) return plural(bytes, 'byte');
  if (bytes < 1048576) return (bytes / 1024).toFixed(1) + ' KB';
  return (bytes / 1048576).toFixed(1) + ' MB';
}

export function jobPage(main, url, id) {
  const top = el('div', {class: 'job-top'});
  const upper = el('div', {class: 'stack'});
  const lower = el('div', {class: 'stack'});
  const output = new Output(id, url);
  let shownOutput = false;

  function toolbar(data) {
    return el('div', {class: 'toolbar', role: 'toolbar', 'aria-label': 'Actions'},
      data.actions.map((action) => el('button', {type: 'button', id: 'action-' + action,
        'data-key': 'action-' + action,
        class: 'button' + (ACTIONS[action].danger ? ' danger' : ''), text: ACTIONS[action].label,
        onclick: () => runAction(id, action, data.job)})));
  }

  function status(data) {
    const job = data.job;
    const lines = [];
    if (data.running) {
      const worker = data.running.worker;
      lines.push(el('p', {class: 'status-line'}, elapsed(data.running.started_at, 'Running for '),
        worker ? ' on worker ' : ' (its worker is starting it)',
        worker ? el('span', {class: 'mono', text: worker.id}) : null, ', run ' + data.running.run + '.'));
    }
    if (job.state === 'blocked' && data.waiting_for.length) {
      lines.push(el('p', {class: 'status-line'}, 'Waiting for ',
        data.waiting_for.map((dep, i) => [i ? ', ' : '', jobLink(dep)]), '.'));
    }
    if (job.state === 'failed' && job.next_run_at) {
      lines.push(el('p', {class: 'status-line'}, 'Attempt ' + (job.attempts + 1) + ' of ' +
        (job.max_retries + 1) + ' starts ', when(job.next_run_at), '.'));
    }
    if (job.last_error) {
      lines.push(el('p', {class: 'callout error', id: 'last-error'}, el('strong', {text: 'Last error: '}),
        job.last_error));
    }
    return lines;
  }

  function draw(data) {
    const job = data.job;
    document.title = job.id + ' · queuectl';
    replaceKeepingFocus(top,
      el('nav', {class: 'crumbs', 'aria-label': 'Breadcrumb'}, el('a', {href: '/jobs', text: 'Jobs'}),
        ' / ', el('span', {class: 'mono', text: job.id})),
      el('div', {class: 'job-title'},
        el('h1', {class: 'mono', id: 'job-title', text: job.id}), badge(job.state, 'large'),
        chip(job.queue, 'queue')),
      toolbar(data), status(data));
    const cards = [
      section('Command', el('pre', {class: 'command', id: 'job-command', text: job.command})),
      section('Details', facts(job, data.running)),
    ];
    if (data.dependencies.length || data.dependents.length) {
      cards.push(section('Dependencies',
        data.dependencies.length ? [el('h3', {text: 'Runs after'}), dependencyList(data.dependencies)]
          : null,
        data.dependents.length ? [el('h3', {text: 'Needed by'}), dependencyList(data.dependents)]
          : null));
    }
    replaceKeepingFocus(upper, cards);
    output.runs = data.outputs;
    const extra = [section('Attempts', attemptsTable(data.attempts, data.running, job.generation,
      output))];
    if (Object.keys(job.env).length) {
      extra.push(section('Environment', el('dl', {class: 'facts mono'},
        Object.entries(job.env).map(([k, v]) => el('div', {class: 'fact'}, el('dt', {text: k}),
          el('dd', {text: v}))))));
    }
    if (data.hook) {
      const h = data.hook;
      extra.push(section('Completion hook', el('p', {}, outcomeBadge(h.outcome === 'succeeded'
        ? 'completed' : 'failed'), ' ', el('span', {class: 'mono', text: h.command || ''}), ' · ',
      h.exit_code === null ? 'no exit code' : 'exit code ' + h.exit_code, ' · ', when(h.finished_at)),
      h.stderr_tail ? el('pre', {class: 'log', text: h.stderr_tail}) : null));
    }
    replaceKeepingFocus(lower, extra);
    if (!shownOutput) {
      upper.after(output.card);
      shownOutput = true;
    }
    output.sync(data.outputs);
  }

  const poll = poller(top, () => getJSON('/api/jobs/' + encodeURIComponent(id)), draw);
  main.append(top, upper, lower);
  document.title = id + ' · queuectl';
  return {
    load: () => poll(true),
    refresh: () => poll(false),
    update: (next) => {
      const run = Number(next.searchParams.get('run')) || null;
      if (run && run !== output.run) output.choose(run, next.searchParams.get('stream') === 'err'
        ? 'err' : 'out', true);
      return poll(false);
    },
    destroy: () => output.stop(),
  };
}

"""
