"""Photo preview: the selected photo with numbered boxes, and a crop of the selected face,
drawn in the terminal by textual-image (kitty / sixel where supported, half-blocks else)."""

from __future__ import annotations

from PIL import Image as PILImage
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Static
from textual_image.widget import HalfcellImage, UnicodeImage
from textual_image.widget import Image as AutoImage

IMAGE_WIDGETS: dict[str, type[Widget]] = {
    "auto": AutoImage, "halfcell": HalfcellImage, "unicode": UnicodeImage,
}


class FacePreview(Vertical):
    """Two image panes (photo, face) or, with ``mode='none'``, a text placeholder."""

    def __init__(self, mode: str = "auto", **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.mode = mode

    def compose(self) -> ComposeResult:
        if self.mode == "none":
            yield Static("previews off (--images none)", id="photo-image")
            yield Static("", id="face-image")
            return
        widget = IMAGE_WIDGETS[self.mode]
        yield widget(None, id="photo-image")
        yield widget(None, id="face-image")

    def show(self, photo: PILImage.Image | None, face: PILImage.Image | None) -> None:
        if self.mode == "none":
            return
        self.query_one("#photo-image").image = photo  # type: ignore[attr-defined]
        self.query_one("#face-image").image = face  # type: ignore[attr-defined]
