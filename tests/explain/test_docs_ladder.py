"""The docs' ladder of a SIPp call is what the renderer draws for the
committed dialog (regenerate: see docs/capture.rst)."""

from pathlib import Path

from sipct.explain.ladder import ladder_svg
from sipct.spec.dialog import load_dialog
from sipct.spec.predict import predict
from sipct.harness.wire import LAB_WIRE

DOCS = Path(__file__).resolve().parents[2] / "docs" / "captures"


def test_the_sipp_ladder_in_the_docs_is_current():
    drawn = ladder_svg(predict(load_dialog(DOCS / "sipp-call.yaml"), wire=LAB_WIRE))
    assert (DOCS / "sipp-call.svg").read_text() == drawn
