"""`lary app` and the Hub Space: a Gradio page where a video becomes its latent actions, shown as pictures.

- `limits`: the work one request may ask for (frames, pixels, file size); light to import.
- `analysis`: the model held once, a video's capped frame range to codes and vectors, the "what if" decoding, the
  downloads. No Gradio.
- `sessions`: the visitors' last analyses, held within a memory budget for the "what if" panel.
- `plots`: the pictures (timeline, code histogram, codebook usage, features as PCA colours).
- `page`: the Gradio Blocks and its handlers; `command`: `lary app`.

The Space (`space/app.py` in the repository) builds the same page with `page.build_app` and launches it.
"""
