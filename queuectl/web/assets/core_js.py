"""``core.js``: Shared helpers: building elements (text only, never markup), the API, formatting."""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// Shared helpers: building elements (text only, never markup), the API, formatting.
// Job text comes from files anyone who can write into the home may have written: it is put
// on the page with text nodes and attributes only, so markup in it stays text.

export const csrf = document.querySelector('meta[name="csrf"]').content;
// dashboard --read-only: the server refuses every change, so no view draws a button.
export const readOnly = document.querySelector('meta[name="queuectl-mode"]').content === 'read-only';
document.getElementById('read-only').hidden = !readOnly;

// Control and invisible characters (an escape sequence, a carriage return, a bidi override)
// shown as their escapes, as the CLI shows them (queuectl.text.one_line): a hostile command
// cannot hide part of itself or pose as another. Newlines and tabs stay.
const INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;
const NAMED = {'\r': '\\r', '\u000b': '\\x0b', '\u000c': '\\x0c'};

export function visible(text) {
  return String(text).replace(INVISIBLE, (c) => NAMED[c] || (c.charCodeAt(0) < 256
    ? '\\x' + c.charCodeAt(0).toString(16).padStart(2, '0')
    : '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0')));
}

export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = visible(value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : key === 'title' ? visible(value) : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.append(child);
    else node.append(document.createTextNode(visible(child)));
  }
}

export function svg(tag, attrs, ...children) {
  const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(key, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ------------------------------------------------------------------ the API

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || 'HTTP ' + status);
    this.status = status;
    this.body = body || {};
  }
}

function address(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== '') query.set(key, value);
  }
  const text = query.toString();
  return text ? path + '?' + text : path;
}

async function answer(response) {
  let body = null;
  try {
    body = await response.json();
  } catch (_ignored) {
    body = {error: 'HTTP ' + response.status + ' (not JSON)'};
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

export async function getJSON(path, params) {
  return answer(await fetch(address(path, params), {headers: {Accept: 'application/json'}}));
}

export async function postJSON(path, body) {
  return answer(await fetch(path, {
    method: 'POST',
    headers: {'X-Queuectl-CSRF': csrf, 'Content-Type': 'application/json'},
    body: JSON.stringify(body || {}),
  }));
}

// ------------------------------------------------------------------ formatting

const numbers = new Intl.NumberFormat();

export function num(value) {
  return value === null || value === undefined ? '\u2013' : numbers.format(value);
}

export function plural(count, one, many) {
  return num(count) + ' ' + (count === 1 ? one : (many || one + 's'));
}

export function parseTime(text) {
  if (!text) return null;
  const moment = new Date(text);
  return Number.isNaN(moment.getTime()) ? null : moment;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '\u2013';
  const value = Math.abs(seconds);
  if (value < 1) return Math.round(value * 1000) + ' ms';
  if (value < 10) return value.toFixed(1) + ' s';
  if (value < 60) return Math.round(value) + ' s';
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return minutes + ' min ' + Math.round(value % 60) + ' s';
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return hours + ' h ' + (minutes % 60) + ' min';
  return Math.floor(hours / 24) + ' d ' + (hours % 24) + ' h';
}

function coarse(seconds) {
  const value = Math.abs(seconds);
  if (value < 60) return Math.max(1, Math.round(value)) + ' s';
  if (value < 3600) return Math.round(value / 60) + ' min';
  if (value < 172800) return Math.round(value / 3600) + ' h';
  return Math.round(value / 86400) + ' d';
}

export function absolute(text) {
  const moment = parseTime(text);
  return moment ? moment.toLocaleString() : '';
}

function relative(moment) {
  const seconds = (moment.getTime() - Date.now()) / 1000;
  if (Math.abs(seconds) < 1) return 'now';
  return seconds > 0 ? 'in ' + coarse(seconds) : coarse(seconds) + ' ago';
}

// "3 min ago" / "in 2 h", with the exact local time as the tooltip; kept current by the
// ticker below, so an unchanged page need not be drawn again to stay true.
export function when(text) {
  const moment = parseTime(text);
  if (!moment) return el('span', {class: 'muted', text: '\u2013'});
  return el('time', {datetime: text, title: moment.toLocaleString(), 'data-rel': text,
    text: relative(moment)});
}

// "1 min 3 s" since a moment, ticking.
export function elapsed(text, prefix) {
  const moment = parseTime(text);
  if (!moment) return el('span', {class: 'muted', text: prefix ? prefix.trim() : '\u2013'});
  return el('span', {'data-since': text, 'data-prefix': prefix || '', title: moment.toLocaleString(),
    text: (prefix || '') + duration((Date.now() - moment.getTime()) / 1000)});
}

setInterval(() => {
  for (const node of document.querySelectorAll('[data-rel]')) {
    const moment = parseTime(node.dataset.rel);
    if (moment) node.textContent = relative(moment);
  }
  for (const node of document.querySelectorAll('[data-since]')) {
    const moment = parseTime(node.dataset.since);
    if (moment) {
      node.textContent = node.dataset.prefix + duration((Date.now() - moment.getTime()) / 1000);
    }
  }
}, 1000);

export function since(text) {
  const moment = parseTime(text);
  return moment ? (Date.now() - moment.getTime()) / 1000 : null;
}

export function clockTime(epochSeconds, withDay) {
  const moment = new Date(epochSeconds * 1000);
  const options = {hour: '2-digit', minute: '2-digit'};
  if (withDay) Object.assign(options, {weekday: 'short'});
  return moment.toLocaleTimeString([], options);
}

// ------------------------------------------------------------------ small pieces

export const STATES = ['pending', 'processing', 'completed', 'failed', 'dead', 'cancelled',
  'blocked', 'held'];

const STATE_WORDS = {processing: 'running'};

export function badge(state, extra) {
  const name = state || 'unknown';
  return el('span', {class: 'badge state-' + name + (extra ? ' ' + extra : '')},
    STATE_WORDS[name] || name);
}

export function chip(text, title) {
  return el('span', {class: 'chip', title}, text);
}

export function jobLink(id, attrs) {
  return el('a', Object.assign({href: '/jobs/' + encodeURIComponent(id), class: 'mono'}, attrs),
    id);
}

export function section(title, ...children) {
  return el('section', {class: 'card'}, title ? el('h2', {text: title}) : null, ...children);
}

export function empty(text, ...more) {
  return el('div', {class: 'empty'}, el('p', {text}), ...more);
}

export function code(text) {
  return el('code', {text});
}

export function describeError(error) {
  if (error instanceof ApiError) return error.message;
  return 'the dashboard did not answer (' + (error && error.message || error) + ')';
}

// Replace a container's content; the element that had the focus (found again by its
// data-key) keeps it, so a keyboard user is not thrown out by a refresh.
export function replaceKeepingFocus(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) && active.dataset ? active.dataset.key : null;
  container.replaceChildren(...children.flat());
  if (key) {
    const again = container.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (again) again.focus({preventScroll: true});
  }
}

// ------------------------------------------------------------------ toasts

export function toast(message, kind) {
  const box = document.getElementById('toasts');
  const item = el('div', {class: 'toast ' + (kind || 'ok'), role: kind === 'error' ? 'alert' : null},
    message);
  box.append(item);
  setTimeout(() => item.remove(), kind === 'error' ? 8000 : 4000);
}
"""
