"""ExportButtons: "Download CSV" and "Download Excel" for the store's filtered, scoped tickets.

Usual sizes go through Panel's FileDownload (the file is written off the
event loop by ``data.export.export_tickets``, with a progress bar, then sent
over the websocket). FileDownload base64-encodes the whole file into one
websocket message (panel issue #4563), so above ``large_export_rows`` the
same two buttons instead send the browser to the authenticated streaming
route through ``download_link`` (a signed, short-lived URL made on the
server for this user and these filters). Both ways run the same writer and
write the same audit row.

Which way is decided when a button is clicked, by one COUNT of the filters
at that moment (shared through the store's cache). The buttons never count
on their own: live events refresh the store every few seconds, and a count
per session per refresh costs the database more than all the clicks.
"""
from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Any, Callable

import panel as pn
import param
from panel.custom import JSComponent

from data.errors import OpsDashError
from data.export import export_tickets
from data.filters import TicketFilters
from data.workers import DASHBOARD, EXPORT

from .panel_compat import OptionalFileDownload
from .store import DashboardStore
from .store_view import guarded_load, set_text, text

log = logging.getLogger("opsdash.export")

LABELS = {"csv": "Download CSV", "xlsx": "Download Excel"}
#: (format, filters) -> URL of the streaming download for the signed-in user.
DownloadLink = Callable[[str, TicketFilters], str]


class BrowserDownload(JSComponent):
    """Makes the browser fetch ``url`` as a download (a plain GET with the session cookie)."""

    url = param.String(default="")

    _esm = """
    export function render({ model }) {
      model.on('url', () => {
        if (!model.url) { return; }
        const link = document.createElement('a');
        link.href = model.url;
        link.download = '';
        link.style.display = 'none';
        document.body.appendChild(link);
        link.click();
        link.remove();
      });
      return document.createElement('span');
    }
    """


class ExportButtons(pn.viewable.Viewer):
    """The two download buttons of one session, reading filters and scope from the store."""

    store = param.ClassSelector(class_=DashboardStore, doc="The session's store: scope, engine, filters.")
    large_export_rows = param.Integer(default=50_000, bounds=(1, None),
                                      doc="Above this many rows, hand over to the streaming route.")
    download_link = param.Callable(default=None, allow_None=True,
                                   doc="(format, filters) -> signed URL of the streaming route; None: never stream.")
    row_count = param.Integer(default=None, allow_None=True, doc="Rows the current filters select.")
    busy = param.Boolean(default=False, doc="An export is being written.")

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._files = {fmt: OptionalFileDownload(label=label, filename=f"tickets.{fmt}", callback=self._callback(fmt),
                                                  # No icon: Panel's icons come from a CDN (cdn.jsdelivr.net,
                                                  # @latest), which the page's CSP does not allow (issue 15).
                                                  color="primary", auto=True, embed=False,
                                                  css_classes=[f"opsdash-export-{fmt}"], sizing_mode="stretch_width")
                       for fmt, label in LABELS.items()}
        self._browser = BrowserDownload(height=0, width=0, margin=0)
        self._progress = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width",
                                                css_classes=["opsdash-export-progress"])
        self._status = text("", css_classes=["opsdash-export-status"], sizing_mode="stretch_width")

    def __panel__(self) -> pn.viewable.Viewable:
        return pn.Column(pn.pane.Markdown("### Export"), *self._files.values(), self._progress, self._status,
                         self._browser, sizing_mode="stretch_width")

    # -- which way: FileDownload or the streaming route ---------------------------
    @property
    def streams(self) -> bool:
        """Whether the last counted size goes to the streaming route."""
        return (self.download_link is not None and self.row_count is not None
                and self.row_count > self.large_export_rows)

    def count_rows(self, filters: TicketFilters) -> int | None:
        """Rows ``filters`` select (blocking: call off the loop); None when the database failed.

        On failure the store's banner says so and the export stays on FileDownload (whose own
        attempt then reports the failure).
        """
        store = self.store
        # The total of the breakdown the dashboard's views share: usually cached, so no query.
        _, count, _ = guarded_load(store, lambda: int(store.breakdown(filters)["tickets"].sum()), "export buttons")
        return count

    async def download(self, fmt: str) -> io.BytesIO | None:
        """A click on a button: the file's bytes, or None after handing over to the streaming route."""
        if self.busy:
            set_text(self._status, "An export is already being prepared.")
            return None
        if self.store.filter_error:
            # The inputs say other filters than the figures show (issue 17): a file of either would
            # surprise someone, so none until the inputs are corrected (the filter bar says why).
            set_text(self._status, "Not downloaded: the filters as entered are not applied. "
                                   "Correct them (see the message under the filters) or clear them.")
            return None
        filters = self.store.filters  # the filters of the click, for the count and the export alike
        if self.download_link is not None:  # without a link every export is a FileDownload: no count needed
            self._set_busy(True)
            set_text(self._status, "Preparing the export...")
            try:
                self.row_count = await DASHBOARD.run(self.count_rows, filters)
            finally:
                self._set_busy(False)
            if self.streams:
                self.start_streamed(fmt, filters)
                return None
            return await self.produce(fmt, filters, total=self.row_count)
        return await self.produce(fmt, filters)

    def _set_busy(self, busy: bool) -> None:
        self.busy = busy
        for widget in self._files.values():
            widget.disabled = busy

    def start_streamed(self, fmt: str, filters: TicketFilters | None = None) -> str | None:
        """Send the browser to a fresh signed URL for ``filters`` (default: the current ones; audited by the route)."""
        try:
            url = self.download_link(fmt, self.store.filters if filters is None else filters)
        except OpsDashError as exc:
            set_text(self._status, str(exc))
            return None
        set_text(self._status, f"Your download of {self.row_count:,} tickets starts shortly; "
                               "the browser shows its progress.")
        # A new value every time, so clicking twice downloads twice.
        self._browser.url = f"{url}&n={id(object())}"
        return url

    # -- FileDownload ---------------------------------------------------------------
    def _callback(self, fmt: str):
        async def produce() -> io.BytesIO | None:
            return await self.download(fmt)

        return produce

    def _show_progress(self, done: int, total: int) -> None:
        value = 100 if total == 0 else min(100, int(done * 100 / total))
        if value != self._progress.value:
            self._progress.value = value

    async def produce(self, fmt: str, filters: TicketFilters | None = None,
                      total: int | None = None) -> io.BytesIO | None:
        """Write the export of ``filters`` (default: the current ones) off the event loop; the file's bytes,
        or None with a message. ``total``: its rows, if just counted (for the progress bar)."""
        if self.busy:
            set_text(self._status, "An export is already being prepared.")
            return None
        self._set_busy(True)
        self._progress.param.update(value=0, visible=True)
        set_text(self._status, "Preparing the export...")
        try:
            with tempfile.TemporaryDirectory(prefix="opsdash-export-") as folder:
                target = Path(folder) / f"export.{fmt}"
                result = await EXPORT.run(
                    export_tickets, self.store.engine, self.store.scope,
                    self.store.filters if filters is None else filters, fmt, target,
                    channel="ui", progress=self._show_progress, total=total, reads=self.store.reads,
                )
                data = io.BytesIO(target.read_bytes())
            self._files[fmt].filename = result.filename
            set_text(self._status, f"Exported {result.row_count:,} tickets to {result.filename}.")
            return data
        except OpsDashError as exc:
            set_text(self._status, f"The export failed: {exc}")
            return None
        except Exception:
            log.exception("export failed")
            set_text(self._status, "The export failed: the ticket database could not be reached. Try again shortly.")
            return None
        finally:
            self._progress.visible = False
            self._set_busy(False)
