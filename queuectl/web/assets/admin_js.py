"""``admin.js``: The queues (/queues), workers (/workers) and schedules (/schedules) views."""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// The queues (/queues), workers (/workers) and schedules (/schedules) views.

import {code, describeError, el, elapsed, empty, getJSON, jobLink, num, plural, postJSON,
  readOnly, replaceKeepingFocus, section, toast, when} from './core.js';
import {confirmAction} from './dialog.js';
import {heading, poller} from './kit.js';
import {refreshNow} from './router.js';

async function change(path, body, question) {
  const answer = await confirmAction(question);
  if (!answer) return;
  try {
    const result = await postJSON(path, body(answer));
    toast(result.message);
  } catch (error) {
    toast(describeError(error), 'error');
  } finally {
    await refreshNow();
  }
}

function table(id, headers, rows) {
  return el('table', {class: 'rows', id},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', {scope: 'col',
      class: ['Limit', 'Running', 'Waiting', 'Pending', 'Failed', 'Held', 'Blocked'].includes(h)
        ? 'num' : null, text: h})))),
    el('tbody', {}, rows));
}

function simpleView(main, title, path, draw) {
  const body = el('div', {class: 'stack'});
  const poll = poller(body, () => getJSON(path), (data) => replaceKeepingFocus(body, draw(data)));
  main.append(heading(title), body);
  document.title = title + ' · queuectl';
  return {load: () => poll(true), refresh: () => poll(false)};
}

// ------------------------------------------------------------------ queues

function queueActions(q) {
  if (readOnly) return el('span', {class: 'muted', text: '\u2013'});
  const base = '/api/queues/' + encodeURIComponent(q.name) + '/';
  const toggle = q.paused
    ? el('button', {type: 'button', class: 'button', id: 'resume-' + q.name,
      'data-key': 'resume-' + q.name, text: 'Resume', onclick: () => change(base + 'resume',
        () => ({}), {title: 'Resume queue ' + q.name + '?', confirm: 'Resume',
        message: 'Its waiting jobs may start again.'})})
    : el('button', {type: 'button', class: 'button', id: 'pause-' + q.name,
      'data-key': 'pause-' + q.name, text: 'Pause', onclick: () => change(base + 'pause',
        () => ({}), {title: 'Pause queue ' + q.name + '?', confirm: 'Pause',
        message: 'No new job of this queue starts until it is resumed; running jobs finish.'})});
  const limit = el('button', {type: 'button', class: 'button', id: 'limit-' + q.name,
    'data-key': 'limit-' + q.name, text: 'Limit…', onclick: () => change(base + 'limit',
      (answer) => ({parallel: answer.value}), {title: 'Parallel limit of ' + q.name,
      confirm: 'Save limit', message: 'At most this many of its jobs run at once, across every ' +
        'worker of the home; 0 means no limit. Running jobs are not stopped.',
      input: {label: 'Jobs at once', min: 0, max: 4096, value: q.parallel}})});
  return el('div', {class: 'row-actions'}, toggle, limit);
}

export function queues(main) {
  return simpleView(main, 'Queues', '/api/queues', (data) => {
    const rows = data.queues.map((q) => el('tr', {'data-queue': q.name},
      el('td', {'data-label': 'Queue'}, el('a', {href: '/jobs?queue=' + encodeURIComponent(q.name),
        class: 'mono strong', text: q.name})),
      el('td', {'data-label': 'State'}, q.paused ? el('span', {class: 'badge paused', text: 'paused'})
        : el('span', {class: 'badge active', text: 'active'})),
      el('td', {'data-label': 'Limit', class: 'num'}, q.parallel ? num(q.parallel) : 'no limit'),
      el('td', {'data-label': 'Running', class: 'num'}, num(q.running)),
      el('td', {'data-label': 'Pending', class: 'num'}, num(q.pending)),
      el('td', {'data-label': 'Failed', class: 'num'}, num(q.failed)),
      el('td', {'data-label': 'Held', class: 'num'}, num(q.held)),
      el('td', {'data-label': 'Blocked', class: 'num'}, num(q.blocked)),
      el('td', {'data-label': 'Actions'}, queueActions(q))));
    return [
      section(null, table('queues', ['Queue', 'State', 'Limit', 'Running', 'Pending', 'Failed',
        'Held', 'Blocked', ''], rows)),
      el('p', {class: 'muted small'}, 'Add a queue with ', code('queuectl queue add NAME'), '; ' +
        'a limit holds across every worker of the home. Pending counts jobs ready to start; ' +
        'failed ones wait for their retry time.'),
    ];
  });
}

// ------------------------------------------------------------------ workers

export function workers(main) {
  return simpleView(main, 'Workers', '/api/workers', (data) => {
    if (!data.workers.length) {
      return section(null, empty('No worker is running for this home.',
        el('p', {}, 'Start one with ', code('queuectl worker start --count 4'),
          '; it appears here within a few seconds.')));
    }
    return data.workers.map((w) => section(null,
      el('div', {class: 'card-head'}, el('h2', {class: 'mono', text: w.id}),
        w.burst ? el('span', {class: 'chip', text: 'burst'}) : null),
      el('dl', {class: 'facts'},
        el('div', {class: 'fact'}, el('dt', {text: 'Host'}), el('dd', {class: 'mono', text: w.host || '\u2013'})),
        el('div', {class: 'fact'}, el('dt', {text: 'Pid'}), el('dd', {class: 'mono', text: String(w.pid)})),
        el('div', {class: 'fact'}, el('dt', {text: 'Threads'}), el('dd', {text: num(w.threads)})),
        el('div', {class: 'fact'}, el('dt', {text: 'Queues'}), el('dd', {class: 'mono',
          text: w.queues ? w.queues.join(', ') : 'all'})),
        el('div', {class: 'fact'}, el('dt', {text: 'Started'}), el('dd', {}, when(w.started_at)))),
      w.jobs.length
        ? [el('h3', {text: 'Running ' + plural(w.jobs.length, 'job')}),
          el('table', {class: 'rows compact'},
            el('thead', {}, el('tr', {}, ['Job', 'Run', 'Running for', 'Thread'].map((h) =>
              el('th', {scope: 'col', text: h})))),
            el('tbody', {}, w.jobs.map((j) => el('tr', {},
              el('td', {'data-label': 'Job'}, jobLink(j.id, {'data-key': 'w-' + j.id})),
              el('td', {'data-label': 'Run', class: 'num'}, String(j.run)),
              el('td', {'data-label': 'Running for'}, elapsed(j.started_at)),
              el('td', {'data-label': 'Thread', class: 'mono small'}, j.thread || '\u2013')))))]
        : el('p', {class: 'muted', text: 'Idle: waiting for a job.'})));
  });
}

// ------------------------------------------------------------------ schedules

export function schedules(main) {
  return simpleView(main, 'Schedules', '/api/schedules', (data) => {
    if (!data.schedules.length) {
      return section(null, empty('No schedules in this home.', el('p', {}, 'Add one with ',
        code('queuectl schedule add NAME --every 1h COMMAND'), '.')));
    }
    const rows = data.schedules.map((s) => {
      const base = '/api/schedules/' + encodeURIComponent(s.name) + '/';
      const verb = s.paused ? 'resume' : 'pause';
      return el('tr', {'data-schedule': s.name},
        el('td', {'data-label': 'Schedule'}, el('span', {class: 'mono strong', text: s.name}),
          el('div', {class: 'command-line mono', title: s.command, text: s.command})),
        el('td', {'data-label': 'Rule', class: 'mono'}, s.rule),
        el('td', {'data-label': 'Next'}, s.paused ? el('span', {class: 'badge paused',
          text: 'paused'}) : when(s.next_due)),
        el('td', {'data-label': 'Last job'}, s.last_job ? jobLink(s.last_job) : '\u2013'),
        el('td', {'data-label': 'Queue', class: 'mono'}, s.queue),
        el('td', {'data-label': 'Actions'}, readOnly ? '\u2013' : el('button', {type: 'button', class: 'button',
          id: verb + '-schedule-' + s.name, 'data-key': verb + '-schedule-' + s.name,
          text: s.paused ? 'Resume' : 'Pause',
          onclick: () => change(base + verb, () => ({}), {
            title: (s.paused ? 'Resume' : 'Pause') + ' schedule ' + s.name + '?',
            confirm: s.paused ? 'Resume' : 'Pause',
            message: s.paused ? 'It enqueues its next occurrence again (and what it missed, as ' +
              'its catch-up rule says).' : 'It enqueues nothing until it is resumed.'})})));
    });
    return section(null, table('schedules', ['Schedule', 'Rule', 'Next', 'Last job', 'Queue', ''],
      rows));
  });
}
"""
