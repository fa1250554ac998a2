"""The click application.

Sub-commands are imported only when invoked, so `discff --help` never pays for torch,
diffusers, open_clip or faiss.
"""

from __future__ import annotations

import importlib
import click

from discff_cli import __version__
from discff_cli.errors import DiscffError

# name -> ("module", "attribute", "one-line help shown by --help without importing the module")
COMMANDS: dict[str, tuple[str, str, str]] = {
    "score": ("discff_cli.commands.score", "score", "Rank captions for one image with Discffusion."),
    "explain": ("discff_cli.commands.explain", "explain", "Map where in an image a caption helps, per score and word."),
    "index": ("discff_cli.commands.index_cmd", "index", "Build and inspect the OpenCLIP/FAISS index."),
    "search": ("discff_cli.commands.search", "search", "Search the index for a text query, optionally reranked."),
    "eval": ("discff_cli.commands.eval_cmd", "eval_", "Measure CLIP and Discffusion on labelled matching tasks."),
    "tune": ("discff_cli.commands.tune", "tune", "Learn prompt deltas from a few labelled pairs."),
    "demo": ("discff_cli.commands.demo", "demo", "Run the whole pipeline offline on the bundled demo world."),
    "serve": ("discff_cli.commands.serve", "serve", "Serve search over HTTP with a web page; models load once."),
}


class UserFacingError(click.ClickException):
    """Carries a DiscffError through click so CliRunner and the console script behave alike."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class LazyGroup(click.Group):
    """A group whose commands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attr, _ = COMMANDS[name]
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("discff_cli.commands"):
                return None  # a command not built yet is simply absent
            raise
        return getattr(module, attr)

    def invoke(self, ctx: click.Context):  # noqa: ANN201 - click's signature
        try:
            return super().invoke(ctx)
        except DiscffError as exc:
            raise UserFacingError(str(exc), exc.exit_code) from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="discff")
def app() -> None:
    """Text-to-image retrieval: an OpenCLIP shortlist reranked with Discffusion.

    \b
      discff index build images/
      discff search "a man holding poles" --rerank 20
      discff tune pairs.jsonl
      discff score image.jpg captions.txt
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    app.main(args=argv, prog_name="discff")
