"""``jobs.js``: The jobs view (/jobs?state=dead&queue=gpu&label=x&q=backup&sort=updated&order=desc&page=2):"""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// The jobs view (/jobs?state=dead&queue=gpu&label=x&q=backup&sort=updated&order=desc&page=2):
// filters, search, sort and pages, all in the address, so a reload, a shared link and the
// back button give the same rows.

import {badge, chip, el, elapsed, empty, getJSON, jobLink, num, replaceKeepingFocus, STATES,
  when} from './core.js';
import {heading, poller} from './kit.js';
import {navigate} from './router.js';

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

const DEFAULTS = {state: '', queue: '', label: '', q: '', sort: 'updated', order: 'desc', page: '1'};
const SORTS = [['updated', 'Last updated'], ['created', 'Created'], ['priority', 'Priority'],
  ['id', 'Id (natural order)']];
const ORDER_WORDS = {
  updated: ['Newest first', 'Oldest first'],
  created: ['Newest first', 'Oldest first'],
  priority: ['Highest first', 'Lowest first'],
  id: ['Z to A', 'A to Z'],
};
const SEARCH_DELAY_MS = 300;

function paramsOf(url) {
  const found = {};
  for (const [key, fallback] of Object.entries(DEFAULTS)) {
    found[key] = url.searchParams.get(key) || fallback;
  }
  if (!/^[0-9]{1,7}$/.test(found.page) || Number(found.page) < 1) found.page = '1';
  return found;
}

function addressOf(chosen) {
  const query = new URLSearchParams();
  for (const [key, fallback] of Object.entries(DEFAULTS)) {
    if (chosen[key] && chosen[key] !== fallback) query.set(key, chosen[key]);
  }
  const text = query.toString();
  return '/jobs' + (text ? '?' + text : '');
}

function option(value, text, selected) {
  return el('option', {value, selected: value === selected, text});
}

function select(id, label, key) {
  return {key, node: el('select', {id, name: key, 'aria-label': label, 'data-key': id})};
}

// Replace a select's options only when they differ, so an open or focused select is left
// alone by a refresh that changed nothing in it.
function syncOptions(node, options, selected) {
  const same = node.options.length === options.length &&
    options.every(([value, text], i) => node.options[i].value === value &&
      node.options[i].text === text);
  if (!same) node.replaceChildren(...options.map(([value, text]) => option(value, text, selected)));
  node.value = selected;
}

function glance(job) {
  if (job.invalid) return el('span', {class: 'problem-text', text: 'not a valid job file'});
  switch (job.state) {
    case 'processing':
      return job.running ? elapsed(job.running.started_at, 'running for ') : 'starting';
    case 'failed':
      return job.next_run_at ? el('span', {}, 'retry ', when(job.next_run_at)) : 'retry due';
    case 'blocked':
      return 'waiting for dependencies';
    case 'held':
      return 'held until released';
    case 'pending':
      return job.priority ? 'waiting, priority ' + job.priority : 'waiting';
    default:
      return el('span', {}, 'finished ', when(job.updated_at));
  }
}

function row(job) {
  const idCell = ID_PATTERN.test(job.id)
    ? jobLink(job.id, {'data-key': 'job-' + job.id, class: 'mono strong'})
    : el('span', {class: 'mono strong', text: job.id});
  return el('tr', {'data-id': job.id, class: 'row-' + job.state},
    el('td', {'data-label': 'Job', class: 'job-cell'}, idCell,
      el('div', {class: 'command-line mono', title: job.command, text: job.command || ''}),
      job.labels.length ? el('div', {class: 'chips'}, job.labels.map((l) => chip(l))) : null),
    el('td', {'data-label': 'State'}, badge(job.state)),
    el('td', {'data-label': 'Queue', class: 'mono nowrap'}, job.queue),
    el('td', {'data-label': 'Attempts', class: 'num'},
      job.invalid ? '\u2013' : num(job.attempts) + ' of ' + num(job.max_retries + 1)),
    el('td', {'data-label': 'Status'}, glance(job)),
    el('td', {'data-label': 'Updated'}, when(job.updated_at)),
    el('td', {'data-label': 'Last error',
      class: 'error-cell' + (job.invalid || job.last_error ? '' : ' is-empty')},
      job.invalid || job.last_error ? el('span', {class: 'error-text',
        title: job.invalid || job.last_error, text: job.invalid || job.last_error})
        : el('span', {class: 'muted', text: '\u2013'})));
}

function pageLink(chosen, page, text, id, enabled) {
  if (!enabled) return el('span', {class: 'button disabled', 'aria-disabled': 'true', text});
  return el('a', {class: 'button', href: addressOf(Object.assign({}, chosen, {page: String(page)})),
    id, 'data-key': id, text});
}

function pager(chosen, data) {
  const page = data.page + 1;
  const pages = Math.max(1, Math.ceil(data.total / data.page_size));
  const first = data.total ? data.page * data.page_size + 1 : 0;
  const last = Math.min(data.total, (data.page + 1) * data.page_size);
  return el('nav', {class: 'pager', 'aria-label': 'Pages'},
    el('span', {class: 'pager-text', id: 'pager-text',
      text: data.total ? 'Showing ' + num(first) + '\u2013' + num(last) + ' of ' + num(data.total)
        : 'No jobs'}),
    el('span', {class: 'pager-buttons'},
      pageLink(chosen, 1, 'First', 'page-first', page > 1),
      pageLink(chosen, page - 1, 'Previous', 'page-prev', page > 1),
      el('span', {class: 'muted', text: 'page ' + num(page) + ' of ' + num(pages)}),
      pageLink(chosen, page + 1, 'Next', 'page-next', page < pages),
      pageLink(chosen, pages, 'Last', 'page-last', page < pages)));
}

export function jobs(main, url) {
  let chosen = paramsOf(url);
  let typing = false;
  let timer = null;
  const search = el('input', {type: 'search', id: 'search', name: 'q', 'data-key': 'search',
    placeholder: 'Search id or command  ( / )', 'aria-label': 'Search by id or command text',
    autocomplete: 'off', spellcheck: 'false', value: chosen.q});
  const selects = [select('filter-state', 'State', 'state'), select('filter-queue', 'Queue', 'queue'),
    select('filter-label', 'Label', 'label'), select('sort', 'Sort by', 'sort'),
    select('order', 'Order', 'order')];
  const clear = el('a', {href: '/jobs', id: 'clear-filters', class: 'button quiet', text: 'Clear'});
  const summary = el('span', {class: 'muted', id: 'jobs-summary'});
  const results = el('div', {id: 'results'});
  const form = el('form', {class: 'filters', role: 'search'},
    el('div', {class: 'search-field'}, search),
    selects.map((s) => el('label', {class: 'select-field'}, el('span', {text: s.node.getAttribute('aria-label')}), s.node)),
    clear);

  function apply(changes, replace) {
    chosen = Object.assign({}, chosen, changes);
    return navigate(addressOf(chosen), replace);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    clearTimeout(timer);
    typing = false;
    apply({q: search.value.trim(), page: '1'}, false);
  });
  search.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      // The first pause in typing makes a history entry, later ones replace it: back
      // returns to the list before this search, not to every prefix typed.
      apply({q: search.value.trim(), page: '1'}, typing);
      typing = true;
    }, SEARCH_DELAY_MS);
  });
  search.addEventListener('blur', () => { typing = false; });
  for (const s of selects) {
    s.node.addEventListener('change', () => {
      const changes = {[s.key]: s.node.value};
      if (s.key !== 'order') changes.page = '1';
      typing = false;
      apply(changes, false);
    });
  }

  function drawFilters(facets) {
    const counts = facets.counts;
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    syncOptions(selects[0].node, [['', 'All states (' + num(total) + ')'],
      ...STATES.map((s) => [s, (s === 'processing' ? 'running' : s) + ' (' + num(counts[s]) + ')'])],
    chosen.state);
    const queues = facets.queues.includes(chosen.queue) || !chosen.queue ? facets.queues
      : [...facets.queues, chosen.queue];
    syncOptions(selects[1].node, [['', 'All queues'], ...queues.map((q) => [q, q])], chosen.queue);
    const labels = facets.labels.includes(chosen.label) || !chosen.label ? facets.labels
      : [...facets.labels, chosen.label];
    syncOptions(selects[2].node, [['', 'Any label'], ...labels.map((l) => [l, l])], chosen.label);
    syncOptions(selects[3].node, SORTS, chosen.sort);
    const words = ORDER_WORDS[chosen.sort] || ORDER_WORDS.updated;
    syncOptions(selects[4].node, [['desc', words[0]], ['asc', words[1]]], chosen.order);
    if (document.activeElement !== search && search.value !== chosen.q) search.value = chosen.q;
    const filtered = chosen.state || chosen.queue || chosen.label || chosen.q;
    clear.hidden = !filtered;
  }

  function draw(data) {
    drawFilters(data.facets);
    const filtered = chosen.state || chosen.queue || chosen.label || chosen.q;
    const all = Object.values(data.facets.counts).reduce((a, b) => a + b, 0);
    summary.textContent = filtered ? num(data.total) + ' of ' + num(all) + ' match'
      : num(all) + (all === 1 ? ' job' : ' jobs');
    if (!data.jobs.length) {
      replaceKeepingFocus(results, empty(filtered ? 'No job matches these filters.'
        : 'There are no jobs in this home yet.', filtered
        ? el('p', {}, el('a', {href: '/jobs', text: 'Show every job'})) : null));
      return;
    }
    replaceKeepingFocus(results,
      el('table', {class: 'rows jobs-table', id: 'jobs'},
        el('thead', {}, el('tr', {}, ['Job', 'State', 'Queue', 'Attempts', 'Status', 'Updated',
          'Last error'].map((h) => el('th', {scope: 'col', class: h === 'Attempts' ? 'num' : null,
          text: h})))),
        el('tbody', {}, data.jobs.map(row))),
      pager(chosen, data));
  }

  const fetchPage = () => getJSON('/api/jobs', {
    state: chosen.state, queue: chosen.queue, label: chosen.label, q: chosen.q,
    sort: chosen.sort, order: chosen.order, page: Number(chosen.page) - 1,
  });
  const poll = poller(results, fetchPage, draw);
  main.append(heading('Jobs', summary), form, results);
  document.title = 'Jobs · queuectl';
  return {
    load: () => poll(true),
    refresh: () => poll(false),
    update: (next) => {
      chosen = paramsOf(next);
      return poll(true);
    },
    destroy: () => clearTimeout(timer),
  };
}
"""
