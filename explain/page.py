"""``sipct explain --html``: one self-contained page (HTML, inline CSS and
SVG, nothing loaded from elsewhere) per run: each dialog's ladder and its
steps in words."""

from __future__ import annotations

from html import escape

from sipct.spec.predict import Prediction
from sipct.spec.printable import printable

from .ladder import ladder_svg
from .words import StepExplanation

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #212121; }
h2 { margin-top: 2em; }
.ladder { overflow-x: auto; border: 1px solid #e0e0e0; }
ol.steps { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px; }
ol.steps li { margin: .6em 0; white-space: pre-wrap; }
li.drop { color: #c62828; }
"""


def explain_page(items: list[tuple[Prediction, list[StepExplanation]]], title: str) -> str:
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>", f"<h1>{escape(title)}</h1>"]
    for prediction, steps in items:
        d = prediction.dialog
        parts.append(f"<h2>{escape(printable(d.name))}</h2><p>{escape(printable(d.source))} - kernel profile "
                     f"{escape(prediction.profile.name)}</p>")
        parts.append(f'<div class="ladder">{ladder_svg(prediction, explanations=steps)}</div>')
        parts.append('<ol class="steps" start="0">')
        for s in steps:
            text = "\n".join(line.strip() if i else line.split(". ", 1)[1] for i, line in enumerate(s.lines()))
            parts.append(f'<li class="{s.verdict or "step"}">{escape(printable(text))}</li>')
        parts.append("</ol>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
