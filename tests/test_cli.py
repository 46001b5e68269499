"""tfrecords_tool.cli: flags made from a config dataclass, and one exit convention for every tool."""
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import pytest
import tensorflow as tf
from absl import flags

from tfrecords_tool import cli, errors

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Example:
    name: str = cli.setting("a", "A string.")
    size: int = cli.setting(3, "An int.", lower_bound=1)
    rate: float = cli.setting(0.5, "A float.")
    fast: bool = cli.setting(False, "A bool.")
    color: str = cli.setting("red", "An enum.", choices=("red", "blue"))
    limit: Optional[int] = cli.setting(None, "An optional int.")
    names: Optional[List[str]] = cli.setting(None, "A list.")


def _parse(*args):
    flag_values = flags.FlagValues()
    cli.define_flags(Example, flag_values)
    flag_values(["tool", *args])
    return cli.from_flags(Example, flag_values)


def test_every_field_becomes_a_flag_with_its_default_and_help():
    flag_values = flags.FlagValues()
    cli.define_flags(Example, flag_values)
    for field in dataclasses.fields(Example):
        assert flag_values[field.name].default == field.default, field.name
        assert flag_values[field.name].help.endswith(field.metadata["help"]), field.name
    assert _parse() == Example()


def test_flags_are_parsed_into_the_config():
    config = _parse("--name=b", "--size=7", "--rate=0.25", "--fast", "--color=blue", "--limit=4",
                    "--names=x,y")
    assert config == Example("b", 7, 0.25, True, "blue", 4, ["x", "y"])


@pytest.mark.parametrize("args", [["--size=0"], ["--color=green"], ["--nope=1"]])
def test_bounds_choices_and_unknown_flags_are_refused(args):
    with pytest.raises(flags.Error):
        _parse(*args)


def test_call_maps_errors_to_exit_statuses(capsys):
    def fails(error):
        raise error

    assert cli.call(lambda: None) == errors.OK
    assert cli.call(lambda: 5) == 5
    cases = [(errors.UsageError("bad setting"), 2), (errors.SomeInputsFailed("2 pages"), 1),
             (OSError("disk full"), 2),
             (tf.errors.NotFoundError(None, None, "no such bucket"), 2)]
    for error, status in cases:
        assert cli.call(fails, error) == status
        assert capsys.readouterr().err == f"error: {getattr(error, 'message', error)}\n"


def test_a_tool_exits_2_with_one_line_for_a_wrong_flag_and_a_usage_error():
    """The real command line: absl's flag error and a ToolError give the same convention."""
    for args, message in ((["--image_size=0"], "error: flag --image_size=0"),
                          (["--images_dir=/nonexistent", "--output_dir=/tmp/x", "extra"],
                           "error: unexpected arguments: extra")):
        result = subprocess.run([sys.executable, "-m", "tfrecords_tool.convert", *args], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert any(line.startswith(message) for line in result.stderr.splitlines()), result.stderr
        assert "Traceback" not in result.stderr
