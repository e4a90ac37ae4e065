"""ExportButtons: "Download CSV" and "Download Excel" for the store's filtered, scoped tickets.

Usual sizes go through Panel's FileDownload (the file is written off the
event loop by ``data.export.export_tickets``, with a progress bar, then sent
over the websocket). FileDownload base64-encodes the whole file into one
websocket message (panel issue #4563), so above ``large_export_rows`` the
same two buttons instead send the browser to the authenticated streaming
route through ``download_link`` (a signed, short-lived URL made on the
server for this user and these filters). Both ways run the same writer and
write the same audit row.
"""
from __future__ import annotations

import asyncio
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
from data.tickets import count_tickets

from .store import DashboardStore
from .store_view import guarded_load, set_text, text

log = logging.getLogger("opsdash.export")

LABELS = {"csv": "Download CSV", "xlsx": "Download Excel"}
#: (format, filters) -> URL of the streaming download for the signed-in user.
DownloadLink = Callable[[str, TicketFilters], str]


class _ExportDownload(pn.widgets.FileDownload):
    """A FileDownload whose callback may return None (export refused or failed: nothing to send).

    Panel's own ``_async_sync_data`` would raise on None and log a traceback.
    """

    async def _async_sync_data(self) -> None:
        fileobj = await self.callback()
        if fileobj is not None:
            self._sync_data(fileobj)


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
        self._files = {fmt: _ExportDownload(label=label, filename=f"tickets.{fmt}", callback=self._callback(fmt),
                                            color="primary", auto=True, embed=False, icon="download",
                                            css_classes=[f"opsdash-export-{fmt}"], sizing_mode="stretch_width")
                       for fmt, label in LABELS.items()}
        self._links = {fmt: pn.widgets.Button(label=label, color="primary", icon="download", visible=False,
                                              css_classes=[f"opsdash-export-{fmt}-large"], sizing_mode="stretch_width")
                       for fmt, label in LABELS.items()}
        for fmt, button in self._links.items():
            button.on_click(lambda _event, fmt=fmt: self.start_streamed(fmt))
        self._browser = BrowserDownload(height=0, width=0, margin=0)
        self._progress = pn.indicators.Progress(value=0, max=100, visible=False, sizing_mode="stretch_width",
                                                css_classes=["opsdash-export-progress"])
        self._status = text("", css_classes=["opsdash-export-status"], sizing_mode="stretch_width")
        self._buttons = pn.Column(*self._files.values(), *self._links.values(), sizing_mode="stretch_width",
                                  margin=0)

    def __panel__(self) -> pn.viewable.Viewable:
        # Re-counted off the event loop whenever the filters or the data change.
        buttons = pn.panel(pn.bind(self._counted_buttons, self.store.param.filters, self.store.param.data_version),
                           sizing_mode="stretch_width")
        return pn.Column(pn.pane.Markdown("### Export"), buttons, self._progress, self._status, self._browser,
                         sizing_mode="stretch_width")

    async def _counted_buttons(self, filters: Any = None, data_version: int = 0) -> pn.Column:
        await asyncio.to_thread(self.update_mode)
        return self._buttons

    # -- which way: FileDownload or the streaming route ---------------------------
    @property
    def streams(self) -> bool:
        return (self.download_link is not None and self.row_count is not None
                and self.row_count > self.large_export_rows)

    def update_mode(self) -> None:
        """Count the rows the filters select and show the buttons for that size (blocking: call off the loop)."""
        store = self.store
        # On failure the store's banner says so; exports then stay on FileDownload.
        _, self.row_count, _ = guarded_load(store, lambda: count_tickets(store.engine, store.scope, store.filters),
                                            "export buttons")
        for fmt in LABELS:
            self._files[fmt].visible = not self.streams
            self._links[fmt].visible = self.streams

    def start_streamed(self, fmt: str) -> str | None:
        """Send the browser to a fresh signed URL for the current filters (audited by the route)."""
        try:
            url = self.download_link(fmt, self.store.filters)
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
            return await self.produce(fmt)

        return produce

    def _show_progress(self, done: int, total: int) -> None:
        value = 100 if total == 0 else min(100, int(done * 100 / total))
        if value != self._progress.value:
            self._progress.value = value

    async def produce(self, fmt: str) -> io.BytesIO | None:
        """Write the export off the event loop; the file's bytes, or None with a message."""
        if self.busy:
            set_text(self._status, "An export is already being prepared.")
            return None
        self.busy = True
        for widget in self._files.values():
            widget.disabled = True
        self._progress.param.update(value=0, visible=True)
        set_text(self._status, "Preparing the export...")
        try:
            with tempfile.TemporaryDirectory(prefix="opsdash-export-") as folder:
                target = Path(folder) / f"export.{fmt}"
                result = await asyncio.to_thread(
                    export_tickets, self.store.engine, self.store.scope, self.store.filters, fmt, target,
                    channel="ui", progress=self._show_progress,
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
            for widget in self._files.values():
                widget.disabled = False
            self.busy = False
