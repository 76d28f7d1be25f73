"""The Hub Space "LAPA-DINOv3 latent actions": the page of `lary app`, with the model named by `LARY_MODEL` (a Hub id
or folder; default the released AGI-Eval/LAPA-DINOv3). Everything else lives in the `lary` package (`lary.app`), which
`scripts/build_space.py` copies into this folder."""

import os

from lary import logs
from lary.app.analysis import Analyzer
from lary.app.page import build_app, launch

logs.setup()
analyzer = Analyzer(os.environ.get("LARY_MODEL", "AGI-Eval/LAPA-DINOv3"))
demo = build_app(analyzer)  # loads the model once, for every visitor

if __name__ == "__main__":
    launch(demo, analyzer.limits)  # the Space sets the address and port (GRADIO_SERVER_NAME, GRADIO_SERVER_PORT)
