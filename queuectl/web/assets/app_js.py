"""``app.js``: Boot: the views and their addresses, then the first draw."""

from __future__ import annotations

from typing import Final

SOURCE: Final = r"""// Boot: the views and their addresses, then the first draw.

import {queues, schedules, workers} from './admin.js';
import {jobPage} from './job.js';
import {jobs} from './jobs.js';
import {overview} from './overview.js';
import {route, start} from './router.js';

route(/^\/$/, 'overview', overview);
route(/^\/jobs$/, 'jobs', jobs);
route(/^\/jobs\/([^/]+)$/, 'jobs', jobPage);
route(/^\/queues$/, 'queues', queues);
route(/^\/workers$/, 'workers', workers);
route(/^\/schedules$/, 'schedules', schedules);
start();
"""
