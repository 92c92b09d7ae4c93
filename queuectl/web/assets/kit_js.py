"""``kit.js``: What every view does the same way: fetch, draw only when the answer changed (so focus"""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// What every view does the same way: fetch, draw only when the answer changed (so focus
// and scrolling survive the 2 s refresh), show "reading the home" while the first read of
// a large home lasts, and say plainly when the server does not answer.

import {describeError, el, num, replaceKeepingFocus} from './core.js';
import {live} from './router.js';

export function poller(container, fetch, draw) {
  let last = null;
  let busy = false;
  return async function poll(force) {
    if (busy) return;
    busy = true;
    try {
      const data = await fetch();
      live.ok();
      const text = JSON.stringify(data);
      if (force || text !== last) {
        last = text;
        draw(data);
      }
    } catch (error) {
      last = null;
      if (error.status === 503 && error.body && error.body.warming) {
        const w = error.body.warming;
        live.ok();
        replaceKeepingFocus(container, el('p', {class: 'notice', role: 'status'},
          'Reading the job files of this home: ' + num(w.read) + ' of ' + num(w.files) +
          '. This happens once, when the dashboard starts.'));
      } else {
        live.failed(describeError(error));
        replaceKeepingFocus(container, el('p', {class: 'problem', role: 'alert'},
          'Could not load this view: ' + describeError(error)));
      }
    } finally {
      busy = false;
    }
  };
}

export function heading(text, ...more) {
  return el('div', {class: 'heading'}, el('h1', {text}), ...more);
}
"""
