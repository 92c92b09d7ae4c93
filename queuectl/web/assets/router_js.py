"""``router.js``: One document, many views: the address names the view (/jobs/ID, /jobs?state=dead ...),"""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// One document, many views: the address names the view (/jobs/ID, /jobs?state=dead ...),
// links change it with history.pushState, and back and forward (popstate) draw the view
// of the address they land on. Every view refreshes itself every 2 s while the tab is
// visible and no dialog is open.

import {el} from './core.js';
import {dialogOpen} from './dialog.js';

const POLL_MS = 2000;
const routes = [];
let current = null;
let rendering = Promise.resolve();

export function route(pattern, nav, make) {
  routes.push({pattern, nav, make});
}

export function navigate(href, replace) {
  const url = new URL(href, location.href);
  if (replace) history.replaceState(null, '', url);
  else history.pushState(null, '', url);
  return render(!replace);
}

function find(pathname) {
  for (const candidate of routes) {
    const found = candidate.pattern.exec(pathname);
    if (found) return {route: candidate, args: found.slice(1).map(decodeURIComponent)};
  }
  return null;
}

function highlight(nav) {
  for (const link of document.querySelectorAll('[data-nav]')) {
    if (link.dataset.nav === nav) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

async function show(moved) {
  const url = new URL(location.href);
  const main = document.getElementById('main');
  const found = find(url.pathname);
  if (!found) {
    current = null;
    highlight(null);
    main.replaceChildren(el('h1', {text: 'Not found'}),
      el('p', {}, 'Nothing lives at this address. ', el('a', {href: '/', text: 'Overview'})));
    return;
  }
  highlight(found.route.nav);
  const same = current && current.route === found.route && current.path === url.pathname;
  if (same && current.view.update) {
    await current.view.update(url);
    return;
  }
  if (current && current.view.destroy) current.view.destroy();
  main.replaceChildren();
  const view = found.route.make(main, url, ...found.args);
  current = {route: found.route, path: url.pathname, view};
  if (moved) {
    window.scrollTo(0, 0);
    main.focus({preventScroll: true});
  }
  await view.load();
}

export function render(moved) {
  rendering = rendering.then(() => show(moved)).catch((error) => console.error(error));
  return rendering;
}

export function refreshNow() {
  if (current && current.view.refresh) return current.view.refresh();
  return Promise.resolve();
}

function followLinks(event) {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = event.target.closest('a[href]');
  if (!link || link.target || link.hasAttribute('download')) return;
  const url = new URL(link.href);
  if (url.origin !== location.origin || url.pathname.startsWith('/api/') ||
      url.pathname === '/metrics' || !find(url.pathname)) return;
  event.preventDefault();
  if (url.href !== location.href) navigate(url.pathname + url.search);
}

// "/" moves the focus to the search field (on the jobs view), as on GitHub or Sidekiq;
// typed into a field or with a modifier it is just a character.
function searchKey(event) {
  if (event.key !== '/' || event.ctrlKey || event.metaKey || event.altKey) return;
  const target = event.target;
  if (target.closest && target.closest('input, textarea, select, [contenteditable], dialog')) return;
  const search = document.getElementById('search');
  if (!search) return;
  event.preventDefault();
  search.focus();
  search.select();
}

// The live indicator in the header: green while answers come, red when they do not.
export const live = {
  ok() {
    const dot = document.getElementById('live');
    dot.className = 'live ok';
    dot.textContent = 'live';
    dot.title = 'refreshed ' + new Date().toLocaleTimeString();
  },
  failed(message) {
    const dot = document.getElementById('live');
    dot.className = 'live down';
    dot.textContent = 'no answer';
    dot.title = message;
  },
};

export function start() {
  history.scrollRestoration = 'manual';
  const url = new URL(location.href);
  if (url.searchParams.has('token')) {  // the server set its cookie: keep the token out of
    url.searchParams.delete('token');  // addresses that get copied and shared
    history.replaceState(null, '', url);
  }
  document.addEventListener('click', followLinks);
  document.addEventListener('keydown', searchKey);
  window.addEventListener('popstate', () => render(true));
  setInterval(() => {
    if (!document.hidden && !dialogOpen() && current && current.view.refresh) {
      current.view.refresh();
    }
  }, POLL_MS);
  render(false);
}
"""
