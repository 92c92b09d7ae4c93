"""The page's files, served under ``/assets/``: a stylesheet and the script's modules.

They are Python modules holding text, so that a wheel carries them with the code (setuptools
packages the ``.py`` files) and nothing is ever fetched from elsewhere: the page works
offline, and it has no third-party code in it. The script is split into ES modules by
purpose (``core``: elements and the API; ``router``: addresses and polling; ``charts``: the
SVG charts; one module per view), loaded by the browser with ``import``.
"""

from __future__ import annotations

from typing import Final

from queuectl.web.assets import (
    admin_js,
    app_css,
    app_js,
    charts_js,
    core_js,
    dialog_js,
    job_js,
    jobs_js,
    kit_js,
    overview_js,
    router_js,
    shell,
)

__all__ = ["ASSETS", "page"]

_JS: Final = "text/javascript; charset=utf-8"

ASSETS: Final = {
    "app.css": ("text/css; charset=utf-8", app_css.SOURCE),
    "app.js": (_JS, app_js.SOURCE),
    "admin.js": (_JS, admin_js.SOURCE),
    "charts.js": (_JS, charts_js.SOURCE),
    "core.js": (_JS, core_js.SOURCE),
    "dialog.js": (_JS, dialog_js.SOURCE),
    "job.js": (_JS, job_js.SOURCE),
    "jobs.js": (_JS, jobs_js.SOURCE),
    "kit.js": (_JS, kit_js.SOURCE),
    "overview.js": (_JS, overview_js.SOURCE),
    "router.js": (_JS, router_js.SOURCE),
}
"""File name -> (content type, text)."""


def page(csrf: str, read_only: bool = False) -> str:
    """The document every view is drawn in, with this server's CSRF token (URL-safe base64,
    so it needs no escaping in the attribute) and whether it may change anything."""
    mode = "read-only" if read_only else "read-write"
    return shell.SOURCE.replace("__CSRF__", csrf).replace("__MODE__", mode)
