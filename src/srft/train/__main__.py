"""`python -m srft.train BUILD_DIR --model DIR --out DIR ...` == `srft train ...`; this is the entry point
`accelerate launch -m srft.train ...` runs on every process."""

import sys

from srft.cli import app

if __name__ == "__main__":
    app(["train", *sys.argv[1:]], prog_name="python -m srft.train")
