"""Rich progress on stderr for downloads and pipeline stages, so stdout stays clean for JSON and manifests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from nimify.cli.failures import stderr


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"  # pragma: no cover - the loop always returns


class PipelineProgress:
    """One spinner per stage, one bar per download."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.downloads: dict[str, TaskID] = {}
        self.stage: TaskID | None = None

    def on_stage(self, name: str) -> None:
        self._close_stage()
        self.stage = self.progress.add_task(name, total=None, detail="")

    def on_download(self, label: str, done: int, total: int | None) -> None:
        detail = human_bytes(done) + (f" / {human_bytes(total)}" if total else "")
        if label not in self.downloads:
            name = f"  download {label.rsplit('/', 1)[-1]}"
            self.downloads[label] = self.progress.add_task(name, total=total, detail=detail)
        self.progress.update(self.downloads[label], completed=done, total=total, detail=detail)

    def _close_stage(self) -> None:
        if self.stage is not None:
            self.progress.update(self.stage, completed=1, total=1)

    def finish(self) -> None:
        self._close_stage()


@contextlib.contextmanager
def pipeline_progress(enabled: bool = True) -> Iterator[PipelineProgress]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=stderr,
        disable=not enabled,
    )
    tracker = PipelineProgress(progress)
    with progress:
        try:
            yield tracker
        finally:
            tracker.finish()
