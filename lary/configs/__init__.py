"""One typed config per `lary` command (`extract.py`, `evaluate.py`, ...), and the parser that makes each a command
line (`parser.py`). Light to import: nothing here imports torch, transformers or datasets."""
