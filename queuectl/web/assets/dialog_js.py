"""``dialog.js``: The confirmation every change goes through: a modal <dialog> (focus stays inside it,"""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// The confirmation every change goes through: a modal <dialog> (focus stays inside it,
// Escape closes it), the confirm button focused so Enter confirms, or a number field first
// when the action needs a value. Resolves to null when cancelled.

import {el} from './core.js';

let open = false;

export function dialogOpen() {
  return open;
}

export function confirmAction({title, message, confirm, danger, input}) {
  return new Promise((resolve) => {
    const field = input ? el('input', {
      id: 'dialog-input', type: 'number', inputmode: 'numeric', required: true,
      min: input.min, max: input.max, step: 1, value: input.value,
    }) : null;
    const problem = el('p', {class: 'problem', id: 'dialog-problem', role: 'alert'});
    const ok = el('button', {type: 'submit', id: 'dialog-confirm',
      class: danger ? 'button danger' : 'button primary', text: confirm});
    const back = el('button', {type: 'button', id: 'dialog-cancel', class: 'button',
      text: 'Back'});
    const form = el('form', {method: 'dialog'},
      el('h2', {id: 'dialog-title', text: title}),
      message ? el('p', {class: 'dialog-message', text: message}) : null,
      field ? el('label', {class: 'field', for: 'dialog-input'}, input.label, field) : null,
      problem,
      el('div', {class: 'dialog-buttons'}, back, ok));
    const dialog = el('dialog', {class: 'dialog', 'aria-labelledby': 'dialog-title'}, form);
    let value = null;
    form.addEventListener('submit', (event) => {
      if (field) {
        const number = Number(field.value);
        if (field.value === '' || !Number.isInteger(number) || number < input.min ||
            number > input.max) {
          event.preventDefault();
          problem.textContent = 'Give a whole number from ' + input.min + ' to ' + input.max + '.';
          field.focus();
          return;
        }
        value = {value: number};
      } else {
        value = {value: true};
      }
    });
    back.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => {
      open = false;
      dialog.remove();
      resolve(value);
    });
    document.body.append(dialog);
    open = true;
    dialog.showModal();
    (field || ok).focus();
    if (field) field.select();
  });
}
"""
