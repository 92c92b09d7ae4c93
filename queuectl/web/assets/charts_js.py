"""``charts.js``: SVG charts drawn here (no library): stacked bars of attempts per step, and lines of"""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// SVG charts drawn here (no library): stacked bars of attempts per step, and lines of
// percentiles. Colours come from the stylesheet (classes), so the dark theme applies.

import {clockTime, duration, el, num, svg} from './core.js';

const HEIGHT = 190;
const PAD = {top: 12, right: 12, bottom: 24, left: 46};

// The top of the axis: four equal steps of a round size (1, 2, 2.5, 3, 4, 5, 6, 8 times a
// power of ten) that reach the largest value.
// Counts use whole steps (1, 2 or 5 times a power of ten).
function niceMax(value, whole) {
  if (value <= 0) return whole ? 4 : 1;
  const raw = value / 4;
  const power = Math.max(whole ? 1 : 0, Math.pow(10, Math.floor(Math.log10(raw))));
  for (const step of whole ? [1, 2, 5, 10] : [1, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (raw <= step * power * 1.0000001) return 4 * step * power;
  }
  return 40 * power;
}

function frame(width, maxValue, label) {
  const inner = {w: width - PAD.left - PAD.right, h: HEIGHT - PAD.top - PAD.bottom};
  const grid = [];
  for (let i = 0; i <= 4; i++) {
    const value = maxValue * i / 4;
    const y = PAD.top + inner.h - inner.h * i / 4;
    grid.push(svg('line', {class: 'grid', x1: PAD.left, x2: width - PAD.right, y1: y, y2: y}));
    grid.push(svg('text', {class: 'tick', x: PAD.left - 6, y: y + 4, 'text-anchor': 'end'},
      label(value)));
  }
  return {inner, grid};
}

function timeTicks(steps, x, inner, span) {
  const ticks = [];
  const every = Math.max(1, Math.ceil(steps.length / Math.max(2, Math.floor(inner.w / 70))));
  const withDay = span > 86400;
  for (let i = 0; i < steps.length; i += every) {
    ticks.push(svg('text', {class: 'tick', x: x(i), y: HEIGHT - 6, 'text-anchor': 'middle'},
      clockTime(steps[i].t, withDay)));
  }
  return ticks;
}

function chartBox(label, width, nodes, emptyText) {
  const picture = svg('svg', {class: 'chart', width, height: HEIGHT,
    viewBox: '0 0 ' + width + ' ' + HEIGHT, role: 'img', 'aria-label': label}, nodes);
  if (emptyText) {
    picture.append(svg('text', {class: 'chart-empty', x: width / 2, y: HEIGHT / 2,
      'text-anchor': 'middle'}, emptyText));
  }
  return picture;
}

// Attempts finished per step, stacked by outcome group.
export function stackedBars(chart, groups, width, label) {
  const steps = chart.steps;
  const totals = steps.map((s) => groups.reduce((sum, g) => sum + s[g], 0));
  const top = niceMax(Math.max(0, ...totals), true);
  const {inner, grid} = frame(width, top, (v) => num(Math.round(v)));
  const slot = inner.w / steps.length;
  const x = (i) => PAD.left + slot * (i + 0.5);
  const bars = steps.map((step, i) => {
    let y = PAD.top + inner.h;
    const parts = [];
    for (const group of groups) {
      if (!step[group]) continue;
      const h = inner.h * step[group] / top;
      y -= h;
      parts.push(svg('rect', {class: 'bar bar-' + group, x: PAD.left + slot * i + slot * 0.12,
        y, width: Math.max(1, slot * 0.76), height: Math.max(0.5, h)}));
    }
    const words = groups.filter((g) => step[g]).map((g) => num(step[g]) + ' ' + g);
    const title = clockTime(step.t, chart.end - chart.start > 86400) + ': ' +
      (words.length ? words.join(', ') : 'nothing finished');
    return svg('g', {}, svg('title', {}, title), svg('rect', {class: 'hover', x: PAD.left +
      slot * i, y: PAD.top, width: slot, height: inner.h}), parts);
  });
  const nothing = totals.every((t) => t === 0) ? 'No attempt finished in this range' : null;
  return chartBox(label, width, [grid, bars, timeTicks(steps, x, inner,
    chart.end - chart.start)], nothing);
}

// Percentile lines (p50 and p95) of one measure ('wait' or 'run'); gaps where no attempt
// finished in a step.
export function percentileLines(chart, measure, width, label) {
  const steps = chart.steps;
  const values = steps.flatMap((s) => [s[measure].p50, s[measure].p95]).filter((v) => v !== null);
  const top = niceMax(Math.max(0, ...values));
  const {inner, grid} = frame(width, top, (v) => (v === 0 ? '0' : duration(v)));
  const slot = inner.w / steps.length;
  const x = (i) => PAD.left + slot * (i + 0.5);
  const y = (v) => PAD.top + inner.h - inner.h * v / top;
  const lines = [];
  for (const which of ['p95', 'p50']) {
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        lines.push(svg('circle', {class: 'dot dot-' + which, cx: run[0][0], cy: run[0][1], r: 2.5}));
      } else if (run.length > 1) {
        lines.push(svg('polyline', {class: 'line line-' + which,
          points: run.map((p) => p[0].toFixed(1) + ',' + p[1].toFixed(1)).join(' ')}));
      }
      run = [];
    };
    steps.forEach((step, i) => {
      const value = step[measure][which];
      if (value === null) flush();
      else run.push([x(i), y(value)]);
    });
    flush();
  }
  const tips = steps.map((step, i) => {
    const p = step[measure];
    const text = clockTime(step.t, chart.end - chart.start > 86400) + ': ' +
      (p.p50 === null ? 'no attempts' : 'p50 ' + duration(p.p50) + ', p95 ' + duration(p.p95));
    return svg('g', {}, svg('title', {}, text), svg('rect', {class: 'hover', x: PAD.left +
      slot * i, y: PAD.top, width: slot, height: inner.h}));
  });
  const nothing = values.length ? null : 'No attempt finished in this range';
  return chartBox(label, width, [grid, lines, tips, timeTicks(steps, x, inner,
    chart.end - chart.start)], nothing);
}

export function legend(items) {
  return el('ul', {class: 'legend'}, items.map(([cls, text]) =>
    el('li', {}, el('span', {class: 'swatch ' + cls, 'aria-hidden': 'true'}), text)));
}
"""
