"""`python -m srft ...` is the `srft` command; `accelerate launch -m srft train ...` runs it on every process."""

from srft.cli import app

if __name__ == "__main__":
    app(prog_name="srft")
